//! TLS identities: a certificate chain and its private key, loaded and checked
//! when the configuration is built, not at the first handshake.
//!
//! Loading goes through BoringSSL (the `boring` crate, the same library quiche
//! uses for the handshake), so a key or certificate that passes here is one
//! the handshake can use.

use crate::error::{Error, Result, haquic_result};
use boring::pkey::{PKey, Private};
use boring::ssl::{SslContextBuilder, SslMethod};
use boring::x509::X509;
use std::io::ErrorKind;
use std::path::Path;

/// A loaded and validated certificate chain with its private key.
#[derive(Clone)]
pub struct Identity {
    /// The leaf first, then the intermediates, as read.
    pub chain: Vec<X509>,
    /// The private key of the leaf.
    pub key: PKey<Private>,
    /// Where the chain came from, for messages ("<memory>" for buffers).
    pub cert_source: String,
    /// Where the key came from.
    pub key_source: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.subject())
            .field("chain_len", &self.chain.len())
            .field("cert_source", &self.cert_source)
            .field("key_source", &self.key_source)
            .finish()
    }
}

/// Where PEM bytes come from; it decides how errors name the input.
enum Source<'a> {
    File(&'a Path),
    Memory(&'a [u8]),
}

impl Source<'_> {
    fn name(&self) -> String {
        match self {
            Source::File(p) => format!("'{}'", p.display()),
            Source::Memory(_) => "<memory>".to_string(),
        }
    }

    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Source::Memory(b) => Ok(b.to_vec()),
            Source::File(p) => std::fs::read(p).map_err(|e| {
                let code = if e.kind() == ErrorKind::NotFound {
                    haquic_result::HAQUIC_ERR_FILE_NOT_FOUND
                } else {
                    haquic_result::HAQUIC_ERR_FILE_UNREADABLE
                };
                Error::new(code, format!("cannot read {what} file '{}': {e}", p.display()))
            }),
        }
    }
}

fn first_ssl_reason(e: &boring::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_owned))
        .unwrap_or_else(|| "no details from BoringSSL".to_owned())
}

fn parse_chain(src: &Source<'_>) -> Result<Vec<X509>> {
    let pem = src.read("certificate")?;
    let bad = |why: String| {
        Error::new(
            haquic_result::HAQUIC_ERR_BAD_CERTIFICATE,
            format!("certificate {}: {why}", src.name()),
        )
    };
    // stack_from_pem stops silently at garbage; an input without any
    // "BEGIN CERTIFICATE" block parses as an empty stack.
    let chain = X509::stack_from_pem(&pem).map_err(|e| bad(first_ssl_reason(&e)))?;
    if chain.is_empty() {
        return Err(bad("no PEM certificate found".into()));
    }
    Ok(chain)
}

fn parse_key(src: &Source<'_>) -> Result<PKey<Private>> {
    let pem = src.read("private key")?;
    if !contains(&pem, b"PRIVATE KEY-----") {
        return Err(Error::new(
            haquic_result::HAQUIC_ERR_BAD_PRIVATE_KEY,
            format!("private key {}: no PEM private key found", src.name()),
        ));
    }
    PKey::private_key_from_pem(&pem).map_err(|e| {
        Error::new(
            haquic_result::HAQUIC_ERR_BAD_PRIVATE_KEY,
            format!("private key {}: {}", src.name(), first_ssl_reason(&e)),
        )
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Identity {
    /// Loads a chain and key from PEM files. Pass the same path twice for a
    /// combined PEM file (HAProxy's `crt` format).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity> {
        Self::load(Source::File(cert), Source::File(key))
    }

    /// Loads a chain and key from PEM buffers.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Identity> {
        Self::load(Source::Memory(cert), Source::Memory(key))
    }

    fn load(cert: Source<'_>, key: Source<'_>) -> Result<Identity> {
        let chain = parse_chain(&cert)?;
        let pkey = parse_key(&key)?;
        let leaf_pub = chain[0].public_key().map_err(|e| {
            Error::new(
                haquic_result::HAQUIC_ERR_BAD_CERTIFICATE,
                format!("certificate {}: unusable public key: {}", cert.name(), first_ssl_reason(&e)),
            )
        })?;
        if !leaf_pub.public_eq(&pkey) {
            return Err(Error::new(
                haquic_result::HAQUIC_ERR_KEY_MISMATCH,
                format!(
                    "private key {} does not match the certificate {} ({})",
                    key.name(),
                    cert.name(),
                    describe_subject(&chain[0])
                ),
            ));
        }
        let id = Identity {
            chain,
            key: pkey,
            cert_source: cert.name(),
            key_source: key.name(),
        };
        // Install it in a throw-away context, exactly as the handshake will:
        // this catches key types BoringSSL refuses for TLS 1.3.
        id.ssl_context_builder()?;
        Ok(id)
    }

    /// A TLS 1.3 context builder carrying this identity, ready for quiche.
    pub fn ssl_context_builder(&self) -> Result<SslContextBuilder> {
        self.context_builder(true)
    }

    /// The server names this identity answers for, lowercased: its DNS
    /// subject alternative names, else its common name.
    pub fn names(&self) -> Vec<String> {
        let leaf = &self.chain[0];
        let mut names: Vec<String> = leaf
            .subject_alt_names()
            .map(|sans| sans.iter().filter_map(|g| g.dnsname().map(|d| d.to_ascii_lowercase())).collect())
            .unwrap_or_default();
        if names.is_empty() {
            names = leaf
                .subject_name()
                .entries_by_nid(boring::nid::Nid::COMMONNAME)
                .filter_map(|e| e.data().as_utf8().ok().map(|s| s.to_ascii_lowercase()))
                .collect();
        }
        names
    }

    /// Whether this identity answers for server name `host`: an exact name
    /// (case-insensitive), or a `*.` wildcard standing for one label.
    pub fn serves(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names().iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *n == host,
        })
    }

    /// Installs this identity on one connection's TLS object, from the
    /// server-name callback.
    fn install(&self, ssl: &mut boring::ssl::SslRef) -> std::result::Result<(), boring::error::ErrorStack> {
        ssl.set_certificate(&self.chain[0])?;
        ssl.set_private_key(&self.key)?;
        for extra in &self.chain[1..] {
            ssl.add_chain_cert(extra)?;
        }
        Ok(())
    }

    /// A context builder serving `self` by default and each of `by_name` to
    /// clients whose server name it matches (first match wins). The chain
    /// is installed per connection, once the server name is known, so that
    /// each certificate goes out with its own intermediates.
    pub fn sni_context_builder(&self, by_name: &[Identity]) -> Result<SslContextBuilder> {
        if by_name.is_empty() {
            return self.context_builder(true);
        }
        let mut b = self.context_builder(false)?;
        let default = self.clone();
        let by_name: Vec<Identity> = by_name.to_vec();
        b.set_servername_callback(move |ssl, alert| {
            let chosen = ssl
                .servername(boring::ssl::NameType::HOST_NAME)
                .and_then(|host| by_name.iter().find(|id| id.serves(host)))
                .unwrap_or(&default);
            chosen.install(ssl).map_err(|_| {
                *alert = boring::ssl::SslAlert::INTERNAL_ERROR;
                boring::ssl::SniError::ALERT_FATAL
            })
        });
        Ok(b)
    }

    fn context_builder(&self, with_chain: bool) -> Result<SslContextBuilder> {
        let tls = |what: &str, e: boring::error::ErrorStack| {
            Error::new(
                haquic_result::HAQUIC_ERR_TLS,
                format!("{what} ({}): {}", self.cert_source, first_ssl_reason(&e)),
            )
        };
        let mut b = SslContextBuilder::new(SslMethod::tls()).map_err(|e| tls("TLS context", e))?;
        b.set_certificate(&self.chain[0]).map_err(|e| tls("installing the certificate", e))?;
        for extra in self.chain[1..].iter().filter(|_| with_chain) {
            b.add_extra_chain_cert(extra.clone()).map_err(|e| tls("adding a chain certificate", e))?;
        }
        b.set_private_key(&self.key).map_err(|e| tls("installing the private key", e))?;
        b.check_private_key().map_err(|e| {
            Error::new(
                haquic_result::HAQUIC_ERR_KEY_MISMATCH,
                format!("private key {} rejected by TLS: {}", self.key_source, first_ssl_reason(&e)),
            )
        })?;
        Ok(b)
    }

    /// The leaf's subject, as "CN=example.com" style text.
    pub fn subject(&self) -> String {
        describe_subject(&self.chain[0])
    }
}

fn describe_subject(cert: &X509) -> String {
    let parts: Vec<String> = cert
        .subject_name()
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let val = e.data().as_utf8().ok()?;
            Some(format!("{key}={val}"))
        })
        .collect();
    if parts.is_empty() { "subject=<empty>".into() } else { parts.join(", ") }
}

/// Helpers shared by unit tests of several modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use boring::pkey::PKey;
    use boring::x509::X509;
    use boring::asn1::Asn1Time;
    use boring::bn::BigNum;
    use boring::ec::{EcGroup, EcKey};
    use boring::hash::MessageDigest;
    use boring::nid::Nid;
    use boring::x509::X509NameBuilder;

    /// A fresh self-signed P-256 certificate and its PKCS#8 key, as PEM.
    pub(crate) fn self_signed(cn: &str) -> (Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
    }

}

#[cfg(test)]
mod tests {
    use super::tests_support::self_signed;
    use super::*;

    #[test]
    fn loads_matching_pair() {
        let (c, k) = self_signed("example.test");
        let id = Identity::from_pem(&c, &k).unwrap();
        assert_eq!(id.subject(), "CN=example.test");
        assert_eq!(id.chain.len(), 1);
    }

    #[test]
    fn rejects_mismatch_garbage_and_missing() {
        let (c1, _) = self_signed("a");
        let (_, k2) = self_signed("b");
        let e = Identity::from_pem(&c1, &k2).unwrap_err();
        assert_eq!(e.code, haquic_result::HAQUIC_ERR_KEY_MISMATCH);
        let e = Identity::from_pem(b"hello", &k2).unwrap_err();
        assert_eq!(e.code, haquic_result::HAQUIC_ERR_BAD_CERTIFICATE);
        let e = Identity::from_pem(&c1, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert_eq!(e.code, haquic_result::HAQUIC_ERR_BAD_PRIVATE_KEY);
        let e = Identity::from_files(Path::new("/nonexistent/c.pem"), Path::new("/nonexistent/k.pem")).unwrap_err();
        assert_eq!(e.code, haquic_result::HAQUIC_ERR_FILE_NOT_FOUND);
        assert!(e.reason.contains("/nonexistent/c.pem"), "{}", e.reason);
    }

    #[test]
    fn combined_pem_file_works() {
        let (c, k) = self_signed("combined");
        let dir = std::env::temp_dir().join(format!("haquic-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("combined.pem");
        std::fs::write(&p, [c, k].concat()).unwrap();
        let id = Identity::from_files(&p, &p).unwrap();
        assert_eq!(id.subject(), "CN=combined");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serves_exact_names_and_one_label_wildcards() {
        let (cert, key) = super::tests_support::self_signed("www.example.com");
        let id = Identity::from_pem(&cert, &key).unwrap();
        assert_eq!(id.names(), vec!["www.example.com".to_string()]);
        assert!(id.serves("www.example.com"));
        assert!(id.serves("WWW.Example.COM."));
        assert!(!id.serves("example.com"));
        assert!(!id.serves("a.www.example.com"));
        let (cert, key) = super::tests_support::self_signed("*.example.com");
        let wild = Identity::from_pem(&cert, &key).unwrap();
        assert!(wild.serves("a.example.com"));
        assert!(!wild.serves("a.b.example.com"));
        assert!(!wild.serves("example.com"));
        assert!(!wild.serves(".example.com"));
    }

}
