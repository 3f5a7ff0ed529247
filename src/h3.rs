//! HTTP/3 message rules that quiche leaves to the application: request and
//! response header validation (RFC 9114 §4.1.2–4.3), cookie joining, and the
//! content-length accounting of a message body.
//!
//! Everything here is pure: the connection state machine (`conn`) calls it and
//! turns a violation into a stream reset with H3_MESSAGE_ERROR.

/// H3_NO_ERROR.
pub const H3_NO_ERROR: u64 = 0x100;
/// H3_GENERAL_PROTOCOL_ERROR.
pub const H3_GENERAL_PROTOCOL_ERROR: u64 = 0x101;
/// H3_INTERNAL_ERROR.
pub const H3_INTERNAL_ERROR: u64 = 0x102;
/// H3_EXCESSIVE_LOAD.
pub const H3_EXCESSIVE_LOAD: u64 = 0x107;
/// H3_REQUEST_REJECTED: the request was not processed (after GOAWAY).
pub const H3_REQUEST_REJECTED: u64 = 0x10b;
/// H3_REQUEST_CANCELLED.
pub const H3_REQUEST_CANCELLED: u64 = 0x10c;
/// H3_MESSAGE_ERROR: a malformed message.
pub const H3_MESSAGE_ERROR: u64 = 0x10e;

/// The wire code of an HTTP/3 connection error (RFC 9114 §8.1, RFC 9204 §6).
pub fn wire_code(e: &quiche::h3::Error) -> u64 {
    use quiche::h3::Error::*;
    match e {
        StreamCreationError => 0x103,
        ClosedCriticalStream => 0x104,
        FrameUnexpected => 0x105,
        FrameError => 0x106,
        ExcessiveLoad => H3_EXCESSIVE_LOAD,
        IdError => 0x108,
        SettingsError => 0x109,
        MissingSettings => 0x10a,
        RequestRejected => H3_REQUEST_REJECTED,
        RequestCancelled => H3_REQUEST_CANCELLED,
        RequestIncomplete => 0x10d,
        MessageError => H3_MESSAGE_ERROR,
        QpackDecompressionFailed => 0x200,
        InternalError => H3_INTERNAL_ERROR,
        _ => H3_GENERAL_PROTOCOL_ERROR,
    }
}

use quiche::h3::NameValue;

/// A header field as quiche decodes it: received sections are handed on
/// as they are, without copying their fields.
pub type Field = quiche::h3::Header;

/// A borrowed header field (what the host hands over to be sent).
pub type FieldRef<'a> = (&'a [u8], &'a [u8]);

/// Why a header section is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

const CONNECTION_SPECIFIC: &[&[u8]] =
    &[b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The bytes a field name may hold: visible ASCII but ':' and uppercase.
const NAME_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x21;
    while c < 0x7f {
        t[c] = c != b':' as usize && !(c >= b'A' as usize && c <= b'Z' as usize);
        c += 1;
    }
    t
};

/// Checks what every section shares: lowercase names, valid characters, no
/// connection-specific fields, `te` only as "trailers".
fn check_regular(name: &[u8], value: &[u8]) -> Result<(), Malformed> {
    if name.is_empty() {
        return Err(Malformed("empty field name".into()));
    }
    if !name.iter().all(|&c| NAME_CHAR[c as usize]) {
        if name.iter().any(|c| c.is_ascii_uppercase()) {
            return Err(Malformed(format!("uppercase field name '{}'", text(name))));
        }
        return Err(Malformed(format!("invalid character in field name '{}'", text(name))));
    }
    // Branch-free, so that it vectorises: values are the long part.
    if value.iter().fold(false, |bad, &c| bad | (c == 0) | (c == b'\r') | (c == b'\n')) {
        return Err(Malformed(format!("invalid character in the value of '{}'", text(name))));
    }
    if CONNECTION_SPECIFIC.contains(&name) {
        return Err(Malformed(format!("connection-specific field '{}'", text(name))));
    }
    if name == b"te" && value != b"trailers" {
        return Err(Malformed("te other than \"trailers\"".into()));
    }
    Ok(())
}

fn parse_content_length(v: &[u8], seen: Option<u64>) -> Result<u64, Malformed> {
    let s = std::str::from_utf8(v).map_err(|_| Malformed("content-length is not a number".into()))?;
    // "a, a" is a list of identical values; anything else is an error.
    let mut value = None;
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) || part.len() > 19 {
            return Err(Malformed(format!("content-length '{s}' is not a number")));
        }
        let n: u64 = part.parse().map_err(|_| Malformed(format!("content-length '{s}' overflows")))?;
        if value.is_some_and(|v| v != n) {
            return Err(Malformed(format!("content-length '{s}' has different values")));
        }
        value = Some(n);
    }
    let n = value.unwrap();
    if seen.is_some_and(|v| v != n) {
        return Err(Malformed("several content-length fields with different values".into()));
    }
    Ok(n)
}

/// A validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The fields as the host will see them: pseudo-headers first, cookie
    /// crumbs joined into one `cookie` field.
    pub fields: Vec<Field>,
    /// The declared body length, if any.
    pub content_length: Option<u64>,
}

/// Validates a request header section (RFC 9114 §4.3.1) and joins cookie
/// crumbs with "; ". Works in place on the decoded fields: they are moved,
/// never copied, and a section without cookies allocates nothing.
pub fn validate_request(mut fields: Vec<Field>) -> Result<Request, Malformed> {
    // Indices into `fields` of the pseudo-headers, in canonical order.
    const PSEUDO: [&[u8]; 5] = [b"method", b"scheme", b"authority", b"path", b"protocol"];
    let mut slot: [Option<usize>; 5] = [None; 5];
    let mut npseudo = 0;
    let mut content_length = None;
    let mut cookies = 0usize;
    let mut host = None;

    for (i, f) in fields.iter().enumerate() {
        let (name, value) = (f.name(), f.value());
        if let Some(pseudo) = name.strip_prefix(b":") {
            if npseudo != i {
                return Err(Malformed(format!("pseudo-header '{}' after a regular field", text(name))));
            }
            let Some(k) = PSEUDO.iter().position(|p| *p == pseudo) else {
                return Err(Malformed(format!("unknown pseudo-header '{}'", text(name))));
            };
            if slot[k].replace(i).is_some() {
                return Err(Malformed(format!("duplicate pseudo-header '{}'", text(name))));
            }
            npseudo += 1;
            continue;
        }
        check_regular(name, value)?;
        match name {
            b"content-length" => content_length = Some(parse_content_length(value, content_length)?),
            b"cookie" => cookies += 1,
            b"host" => host = Some(i),
            _ => {}
        }
    }
    let value = |k: usize| slot[k].map(|i| fields[i].value());
    let (method, scheme, authority, path, protocol) = (value(0), value(1), value(2), value(3), value(4));

    let method = method.ok_or_else(|| Malformed("missing :method".into()))?;
    if method.is_empty() {
        return Err(Malformed("empty :method".into()));
    }
    if method == b"CONNECT" && protocol.is_none() {
        if scheme.is_some() || path.is_some() {
            return Err(Malformed("CONNECT with :scheme or :path".into()));
        }
        if authority.is_none() {
            return Err(Malformed("CONNECT without :authority".into()));
        }
    } else {
        if protocol.is_some() && method != b"CONNECT" {
            return Err(Malformed(":protocol on a method other than CONNECT".into()));
        }
        match scheme {
            None => return Err(Malformed("missing :scheme".into())),
            Some(s) if s.is_empty() => return Err(Malformed("empty :scheme".into())),
            _ => {}
        }
        match path {
            None => return Err(Malformed("missing :path".into())),
            Some(p) if p.is_empty() => return Err(Malformed("empty :path".into())),
            _ => {}
        }
        let host = host.map(|i| fields[i].value());
        let is_http = matches!(scheme, Some(b"http") | Some(b"https"));
        if is_http && authority.is_none_or(|a| a.is_empty()) && host.is_none_or(|h| h.is_empty()) {
            return Err(Malformed("missing :authority and host".into()));
        }
    }
    if let (Some(a), Some(h)) = (authority, host) {
        if a != fields[h].value() {
            return Err(Malformed(":authority and host differ".into()));
        }
    }

    // Pseudo-headers first, in canonical order (they are a prefix already).
    let rank = |name: &[u8]| PSEUDO.iter().position(|p| name.get(1..) == Some(*p)).unwrap_or(PSEUDO.len());
    fields[..npseudo].sort_unstable_by_key(|f| rank(f.name()));
    // Cookie crumbs leave their places and come back joined, last.
    if cookies > 0 {
        let mut joined: Vec<u8> = Vec::new();
        let mut crumbs = 0;
        fields.retain(|f| {
            if f.name() != b"cookie" {
                return true;
            }
            if crumbs > 0 {
                joined.extend_from_slice(b"; ");
            }
            crumbs += 1;
            joined.extend_from_slice(f.value());
            false
        });
        fields.push(Field::new(b"cookie", &joined));
    }
    Ok(Request { fields, content_length })
}

/// Validates a response header section: `:status` (three digits) first and
/// alone among pseudo-headers. Returns the declared content-length.
pub fn validate_response<T: NameValue>(fields: &[T]) -> Result<Option<u64>, Malformed> {
    let mut status = false;
    let mut regular_seen = false;
    let mut content_length = None;
    for f in fields {
        let (name, value) = (f.name(), f.value());
        if name.first() == Some(&b':') {
            if regular_seen {
                return Err(Malformed("pseudo-header after a regular field".into()));
            }
            if name != b":status" || status {
                return Err(Malformed(format!("unexpected pseudo-header '{}' in a response", text(name))));
            }
            if value.len() != 3 || !value.iter().all(|c| c.is_ascii_digit()) {
                return Err(Malformed(format!(":status '{}' is not three digits", text(value))));
            }
            status = true;
            continue;
        }
        regular_seen = true;
        check_regular(name, value)?;
        if name == b"content-length" {
            content_length = Some(parse_content_length(value, content_length)?);
        }
    }
    if !status {
        return Err(Malformed("missing :status".into()));
    }
    Ok(content_length)
}

/// Validates a trailer section: no pseudo-headers, the regular-field rules.
pub fn validate_trailers<T: NameValue>(fields: &[T]) -> Result<(), Malformed> {
    for f in fields {
        let (name, value) = (f.name(), f.value());
        if name.first() == Some(&b':') {
            return Err(Malformed(format!("pseudo-header '{}' in trailers", text(name))));
        }
        check_regular(name, value)?;
    }
    Ok(())
}

/// Counts a message body against its declared content-length.
#[derive(Debug, Default, Clone, Copy)]
pub struct BodyCounter {
    /// The declared length, if any.
    pub expected: Option<u64>,
    /// Bytes seen so far.
    pub seen: u64,
}

impl BodyCounter {
    /// Adds `n` body bytes; fails once the body exceeds content-length.
    pub fn add(&mut self, n: usize) -> Result<(), Malformed> {
        self.seen += n as u64;
        match self.expected {
            Some(e) if self.seen > e => Err(Malformed(format!("body longer than content-length {e}"))),
            _ => Ok(()),
        }
    }

    /// At the end of the body: fails when it is shorter than content-length.
    pub fn finish(&self) -> Result<(), Malformed> {
        match self.expected {
            Some(e) if self.seen != e => {
                Err(Malformed(format!("body of {} bytes, content-length {e}", self.seen)))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(list: &[(&str, &str)]) -> Vec<Field> {
        list.iter().map(|(n, v)| Field::new(n.as_bytes(), v.as_bytes())).collect()
    }

    const OK: &[(&str, &str)] = &[(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", "/")];

    #[test]
    fn accepts_a_plain_request_and_joins_cookies() {
        let mut l = OK.to_vec();
        l.extend([("cookie", "a=1"), ("x-y", "z"), ("cookie", "b=2")]);
        let r = validate_request(f(&l)).unwrap();
        assert_eq!(r.fields.last().unwrap(), &Field::new(b"cookie", b"a=1; b=2"));
        assert_eq!(r.fields[0].name(), b":method");
        // pseudo-headers in canonical order, the rest in arrival order
        let mut l = vec![(":path", "/"), (":authority", "a.test"), (":scheme", "https"), (":method", "GET")];
        l.extend([("cookie", ""), ("x-y", "z"), ("cookie", "b=2")]);
        let r = validate_request(f(&l)).unwrap();
        let names: Vec<&[u8]> = r.fields.iter().map(|h| h.name()).collect();
        assert_eq!(names, [&b":method"[..], b":scheme", b":authority", b":path", b"x-y", b"cookie"]);
        assert_eq!(r.fields[5].value(), b"; b=2");
    }

    #[test]
    fn rejects_each_malformation() {
        let cases: &[&[(&str, &str)]] = &[
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a")],
            &[(":scheme", "https"), (":authority", "a"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("X-Up", "1")],
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("connection", "close")],
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("te", "gzip")],
            &[(":method", "GET"), ("a", "b"), (":scheme", "https"), (":authority", "a"), (":path", "/")],
            &[(":method", "GET"), (":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")],
            &[(":method", "GET"), (":foo", "x"), (":scheme", "https"), (":authority", "a"), (":path", "/")],
            &[(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("content-length", "x")],
            &[(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("content-length", "1, 2")],
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/")],
            &[(":method", "CONNECT"), (":authority", "a"), (":path", "/")],
        ];
        for c in cases {
            assert!(validate_request(f(c)).is_err(), "accepted {c:?}");
        }
    }

    #[test]
    fn body_counter_checks_both_directions() {
        let mut c = BodyCounter { expected: Some(10), seen: 0 };
        c.add(4).unwrap();
        assert!(c.finish().is_err());
        c.add(6).unwrap();
        c.finish().unwrap();
        assert!(c.add(1).is_err());
    }

    #[test]
    fn responses_and_trailers() {
        assert!(validate_response(&f(&[(":status", "200"), ("a", "b")])).is_ok());
        assert!(validate_response(&f(&[("a", "b")])).is_err());
        assert!(validate_response(&f(&[(":status", "20")])).is_err());
        assert!(validate_trailers(&f(&[("x-checksum", "1")])).is_ok());
        assert!(validate_trailers(&f(&[(":path", "/")])).is_err());
    }
}
