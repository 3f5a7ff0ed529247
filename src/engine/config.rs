//! The engine configuration: TLS identity, ALPN, limits and congestion
//! control, each validated when it is set.
//!
//! A [`Config`] is shared (the C ABI hands it out as a refcounted handle) and
//! built once, at the host's configuration time, then read by engines created
//! from it. Every setter either applies its whole change or none of it, and
//! records the reason for a rejection so the host can print it.

use super::tls::Identity;
use crate::error::{Error, Result, haquic_result};
use std::ffi::CString;
use std::os::raw::c_char;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Congestion-control algorithms the engine can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcAlgorithm {
    /// CUBIC (RFC 9438), the default.
    Cubic,
    /// NewReno (RFC 9002).
    Reno,
    /// BBRv2.
    Bbr2,
}

impl CcAlgorithm {
    /// Parses a name as an operator writes it. HAProxy's `quic-cc-algo`
    /// spellings (`newreno`, `bbr`) are accepted alongside quiche's.
    pub fn from_name(name: &str) -> Result<CcAlgorithm> {
        match name.to_ascii_lowercase().as_str() {
            "cubic" => Ok(CcAlgorithm::Cubic),
            "reno" | "newreno" => Ok(CcAlgorithm::Reno),
            "bbr2" | "bbr" => Ok(CcAlgorithm::Bbr2),
            _ => Err(Error::new(
                haquic_result::HAQUIC_ERR_UNKNOWN_CC_ALGORITHM,
                format!(
                    "unknown congestion-control algorithm '{name}' \
                     (expected cubic, newreno, reno, bbr or bbr2)"
                ),
            )),
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            CcAlgorithm::Cubic => "cubic",
            CcAlgorithm::Reno => "reno",
            CcAlgorithm::Bbr2 => "bbr2",
        }
    }

    /// The quiche equivalent.
    pub fn to_quiche(self) -> quiche::CongestionControlAlgorithm {
        match self {
            CcAlgorithm::Cubic => quiche::CongestionControlAlgorithm::CUBIC,
            CcAlgorithm::Reno => quiche::CongestionControlAlgorithm::Reno,
            CcAlgorithm::Bbr2 => quiche::CongestionControlAlgorithm::Bbr2Gcongestion,
        }
    }
}

/// Transport and HTTP/3 limits. Every field has a default and a range; a value
/// outside its range is rejected with [`haquic_result::HAQUIC_ERR_OUT_OF_RANGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Idle timeout in milliseconds.
    pub idle_timeout_ms: u64,
    /// Concurrent bidirectional streams the peer may open.
    pub max_streams_bidi: u64,
    /// Concurrent unidirectional streams the peer may open (HTTP/3 needs 3).
    pub max_streams_uni: u64,
    /// Connection-level flow-control window, in bytes.
    pub initial_max_data: u64,
    /// Per-stream window for bidirectional streams the host opens.
    pub initial_max_stream_data_bidi_local: u64,
    /// Per-stream window for bidirectional streams the peer opens.
    pub initial_max_stream_data_bidi_remote: u64,
    /// Per-stream window for unidirectional streams.
    pub initial_max_stream_data_uni: u64,
    /// Largest request header section accepted (SETTINGS_MAX_FIELD_SECTION_SIZE).
    pub max_field_section_size: u64,
    /// Largest UDP payload sent: the ceiling of path MTU discovery, which
    /// starts at 1200 bytes and raises the size once a probe is acknowledged.
    pub max_udp_payload_size: u64,
}

/// One row of the limits table: name, accessor, allowed range.
struct Bound {
    name: &'static str,
    get: fn(&Limits) -> u64,
    min: u64,
    max: u64,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * 1024 * 1024;

const BOUNDS: &[Bound] = &[
    Bound { name: "idle_timeout_ms", get: |l| l.idle_timeout_ms, min: 1, max: 3_600_000 },
    Bound { name: "max_streams_bidi", get: |l| l.max_streams_bidi, min: 1, max: 65_536 },
    Bound { name: "max_streams_uni", get: |l| l.max_streams_uni, min: 3, max: 1_024 },
    Bound { name: "initial_max_data", get: |l| l.initial_max_data, min: KIB, max: GIB },
    Bound {
        name: "initial_max_stream_data_bidi_local",
        get: |l| l.initial_max_stream_data_bidi_local,
        min: KIB,
        max: GIB,
    },
    Bound {
        name: "initial_max_stream_data_bidi_remote",
        get: |l| l.initial_max_stream_data_bidi_remote,
        min: KIB,
        max: GIB,
    },
    Bound {
        name: "initial_max_stream_data_uni",
        get: |l| l.initial_max_stream_data_uni,
        min: KIB,
        max: GIB,
    },
    Bound { name: "max_field_section_size", get: |l| l.max_field_section_size, min: 256, max: 16 * MIB },
    Bound { name: "max_udp_payload_size", get: |l| l.max_udp_payload_size, min: 1_200, max: 65_527 },
];

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            idle_timeout_ms: 30_000,
            max_streams_bidi: 100,
            max_streams_uni: 3,
            initial_max_data: 10 * MIB,
            initial_max_stream_data_bidi_local: MIB,
            initial_max_stream_data_bidi_remote: MIB,
            initial_max_stream_data_uni: MIB,
            max_field_section_size: 64 * KIB,
            max_udp_payload_size: 1_452,
        }
    }
}

impl Limits {
    /// Checks every field against its range; the error names the first
    /// offending field, its value and the range.
    pub fn validate(&self) -> Result<()> {
        for b in BOUNDS {
            let v = (b.get)(self);
            if v < b.min || v > b.max {
                return Err(Error::new(
                    haquic_result::HAQUIC_ERR_OUT_OF_RANGE,
                    format!("{} = {v} is out of range [{}, {}]", b.name, b.min, b.max),
                ));
            }
        }
        Ok(())
    }
}

/// Parses an ALPN list in wire format (each protocol preceded by its length
/// byte, as HAProxy stores `alpn`) into its protocols.
pub fn parse_alpn_wire(wire: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = |why: String| Error::new(haquic_result::HAQUIC_ERR_BAD_ALPN, why);
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 {
            return Err(bad(format!("ALPN entry {} is empty", out.len() + 1)));
        }
        if tail.len() < len {
            return Err(bad(format!(
                "ALPN wire list truncated: entry {} announces {len} bytes, {} remain",
                out.len() + 1,
                tail.len()
            )));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    validate_alpn(&out)?;
    Ok(out)
}

/// Checks a list of ALPN protocols: 1 to 16 entries, each 1 to 255 bytes of
/// printable ASCII.
pub fn validate_alpn(protos: &[Vec<u8>]) -> Result<()> {
    let bad = |why: String| Error::new(haquic_result::HAQUIC_ERR_BAD_ALPN, why);
    if protos.is_empty() {
        return Err(bad("ALPN list is empty".into()));
    }
    if protos.len() > 16 {
        return Err(bad(format!("ALPN list has {} entries, at most 16 allowed", protos.len())));
    }
    for (i, p) in protos.iter().enumerate() {
        if p.is_empty() || p.len() > 255 {
            return Err(bad(format!("ALPN entry {} has length {}, allowed 1 to 255", i + 1, p.len())));
        }
        if !p.iter().all(|c| c.is_ascii_graphic()) {
            return Err(bad(format!(
                "ALPN entry {} ({}) contains non-printable bytes",
                i + 1,
                String::from_utf8_lossy(p)
            )));
        }
    }
    Ok(())
}

/// The most certificates one configuration serves by server name.
pub const MAX_SNI_CERTIFICATES: usize = 256;

/// The settings themselves, read and written under the config's lock.
#[derive(Debug, Clone)]
pub struct ConfigState {
    /// The certificate chain and key; `None` until loaded.
    pub identity: Option<Identity>,
    /// More certificates, each served to clients whose server name (SNI)
    /// it matches; `identity` is served otherwise.
    pub sni_identities: Vec<Identity>,
    /// ALPN protocols offered, in preference order. Defaults to `h3`.
    pub alpn: Vec<Vec<u8>>,
    /// Transport and HTTP/3 limits.
    pub limits: Limits,
    /// Congestion control.
    pub cc: CcAlgorithm,
    /// Secret shared by every process of a cluster or reload: Retry tokens
    /// and stateless-reset tokens derive from it. Empty means random.
    pub cluster_secret: Vec<u8>,
    /// Client role: verify the server's certificate.
    pub verify_peer: bool,
    /// Client role: CA bundle to verify against (system default otherwise).
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept 0-RTT (early data) from resuming clients (HAProxy's
    /// `allow-0rtt`).
    pub early_data: bool,
    /// Pace sending to quiche's computed send times.
    pub pacing: bool,
    /// TLS key-exchange groups, colon-separated in preference order
    /// (HAProxy's `curves`); BoringSSL's defaults (X25519MLKEM768, X25519,
    /// P-256, P-384) when None.
    pub curves: Option<String>,
}

impl Default for ConfigState {
    fn default() -> ConfigState {
        ConfigState {
            identity: None,
            sni_identities: Vec::new(),
            alpn: vec![b"h3".to_vec()],
            limits: Limits::default(),
            cc: CcAlgorithm::Cubic,
            cluster_secret: Vec::new(),
            verify_peer: true,
            ca_file: None,
            early_data: false,
            pacing: true,
            curves: None,
        }
    }
}

/// A shareable engine configuration.
///
/// Setters validate, then apply. The last rejection's reason is kept for the
/// host ([`Config::last_error`]). A panic inside an update poisons the
/// configuration: later calls report [`haquic_result::HAQUIC_ERR_PANIC`].
#[derive(Debug, Default)]
pub struct Config {
    state: Mutex<ConfigState>,
    last_error: Mutex<LastError>,
}

/// The last rejection, kept both as an [`Error`] and as a C string whose
/// address stays put until the next call records another outcome.
#[derive(Debug, Default)]
struct LastError {
    error: Option<Error>,
    text: CString,
}

#[cfg(feature = "test-hooks")]
thread_local! {
    static INJECT_PANIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Test hook: the next configuration update on this thread panics.
#[cfg(feature = "test-hooks")]
pub fn inject_panic_in_next_update() {
    INJECT_PANIC.with(|p| p.set(true));
}

impl Config {
    /// A configuration with default settings and no certificate.
    pub fn new() -> Config {
        Config::default()
    }

    fn lock_state(&self) -> Result<MutexGuard<'_, ConfigState>> {
        self.state.lock().map_err(|_| {
            Error::new(
                haquic_result::HAQUIC_ERR_PANIC,
                "configuration is unusable after an internal panic",
            )
        })
    }

    /// Runs `f` on the state. On error nothing is changed and the reason is
    /// recorded; on success the recorded reason is cleared.
    fn update(&self, f: impl FnOnce(&mut ConfigState) -> Result<()>) -> Result<()> {
        let result = self.lock_state().and_then(|mut guard| {
            #[cfg(feature = "test-hooks")]
            if INJECT_PANIC.with(|p| p.replace(false)) {
                panic!("haquic test hook: injected panic inside a configuration update");
            }
            let mut next = guard.clone();
            f(&mut next)?;
            *guard = next;
            Ok(())
        });
        self.record(&result);
        result
    }

    /// Records the outcome of a call for [`Config::last_error`].
    pub fn record<T>(&self, result: &Result<T>) {
        if let Ok(mut last) = self.last_error.lock() {
            let error = result.as_ref().err().cloned();
            let text = error.as_ref().map(|e| e.reason.replace('\0', "")).unwrap_or_default();
            last.text = CString::new(text).unwrap_or_default();
            last.error = error;
        }
    }

    /// The reason for the last rejected call, if the last call failed.
    pub fn last_error(&self) -> Option<Error> {
        self.last_error.lock().ok().and_then(|l| l.error.clone())
    }

    /// The last reason as a C string ("" after a success). The pointer stays
    /// valid until the next call on this configuration records an outcome.
    pub fn last_error_ptr(&self) -> *const c_char {
        match self.last_error.lock() {
            Ok(l) => l.text.as_ptr(),
            Err(_) => c"configuration is unusable after an internal panic".as_ptr(),
        }
    }

    /// The limits and the pacing switch, without copying the rest (read for
    /// every new connection).
    pub fn limits_and_pacing(&self) -> (Limits, bool) {
        self.lock_state().map(|s| (s.limits, s.pacing)).unwrap_or((Limits::default(), true))
    }

    /// A copy of the current settings.
    pub fn snapshot(&self) -> Result<ConfigState> {
        self.lock_state().map(|g| g.clone())
    }

    /// Loads and checks a certificate chain and key from PEM files.
    pub fn load_cert_chain_and_key(&self, cert: &Path, key: &Path) -> Result<()> {
        self.update(|s| {
            s.identity = Some(Identity::from_files(cert, key)?);
            Ok(())
        })
    }

    /// Loads and checks a certificate chain and key from PEM buffers.
    pub fn load_cert_chain_and_key_pem(&self, cert: &[u8], key: &[u8]) -> Result<()> {
        self.update(|s| {
            s.identity = Some(Identity::from_pem(cert, key)?);
            Ok(())
        })
    }

    /// Adds a certificate chain and key from PEM files, served by server
    /// name, up to `MAX_SNI_CERTIFICATES`.
    pub fn add_sni_certificate(&self, cert: &Path, key: &Path) -> Result<()> {
        self.add_sni_identity(|| Identity::from_files(cert, key))
    }

    /// Like `add_sni_certificate`, from PEM buffers.
    pub fn add_sni_certificate_pem(&self, cert: &[u8], key: &[u8]) -> Result<()> {
        self.add_sni_identity(|| Identity::from_pem(cert, key))
    }

    fn add_sni_identity(&self, load: impl FnOnce() -> Result<Identity>) -> Result<()> {
        self.update(|s| {
            if s.sni_identities.len() >= MAX_SNI_CERTIFICATES {
                return Err(Error::new(
                    haquic_result::HAQUIC_ERR_LIMIT,
                    format!("at most {MAX_SNI_CERTIFICATES} certificates can be served by server name"),
                ));
            }
            let id = load()?;
            if id.names().is_empty() {
                return Err(Error::new(
                    haquic_result::HAQUIC_ERR_BAD_CERTIFICATE,
                    format!("certificate {} names no server (no DNS subject alternative name or common name)", id.cert_source),
                ));
            }
            s.sni_identities.push(id);
            Ok(())
        })
    }

    /// Sets the ALPN list.
    pub fn set_alpn(&self, protos: Vec<Vec<u8>>) -> Result<()> {
        self.update(|s| {
            validate_alpn(&protos)?;
            s.alpn = protos;
            Ok(())
        })
    }

    /// Sets all limits at once.
    pub fn set_limits(&self, limits: Limits) -> Result<()> {
        self.update(|s| {
            limits.validate()?;
            s.limits = limits;
            Ok(())
        })
    }

    /// Sets the idle timeout alone.
    pub fn set_idle_timeout(&self, ms: u64) -> Result<()> {
        self.update(|s| {
            let next = Limits { idle_timeout_ms: ms, ..s.limits };
            next.validate()?;
            s.limits = next;
            Ok(())
        })
    }

    /// Sets the congestion-control algorithm by name.
    pub fn set_cc_algorithm(&self, name: &str) -> Result<()> {
        self.update(|s| {
            s.cc = CcAlgorithm::from_name(name)?;
            Ok(())
        })
    }

    /// Sets the cluster secret (1 to 1024 bytes).
    pub fn set_cluster_secret(&self, secret: &[u8]) -> Result<()> {
        self.update(|s| {
            if secret.is_empty() || secret.len() > 1024 {
                return Err(Error::new(
                    haquic_result::HAQUIC_ERR_OUT_OF_RANGE,
                    format!("cluster secret of {} bytes; allowed 1 to 1024", secret.len()),
                ));
            }
            s.cluster_secret = secret.to_vec();
            Ok(())
        })
    }

    /// Client role: whether to verify the server certificate, and against
    /// which CA file (None: the system's).
    pub fn set_verify_peer(&self, verify: bool, ca_file: Option<&Path>) -> Result<()> {
        self.update(|s| {
            if let Some(p) = ca_file {
                let pem = std::fs::read(p).map_err(|e| {
                    let code = if e.kind() == std::io::ErrorKind::NotFound {
                        haquic_result::HAQUIC_ERR_FILE_NOT_FOUND
                    } else {
                        haquic_result::HAQUIC_ERR_FILE_UNREADABLE
                    };
                    Error::new(code, format!("cannot read CA file '{}': {e}", p.display()))
                })?;
                if boring::x509::X509::stack_from_pem(&pem).map(|v| v.is_empty()).unwrap_or(true) {
                    return Err(Error::new(
                        haquic_result::HAQUIC_ERR_BAD_CERTIFICATE,
                        format!("CA file '{}': no PEM certificate found", p.display()),
                    ));
                }
            }
            s.verify_peer = verify;
            s.ca_file = ca_file.map(Path::to_path_buf);
            Ok(())
        })
    }

    /// Builds a client-role quiche configuration (no certificate needed).
    pub fn to_quiche_client(&self) -> Result<quiche::Config> {
        let s = self.snapshot()?;
        let q = |e: quiche::Error| Error::new(haquic_result::HAQUIC_ERR_TLS, format!("quiche: {e}"));
        let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).map_err(q)?;
        let alpn: Vec<&[u8]> = s.alpn.iter().map(|p| p.as_slice()).collect();
        c.set_application_protos(&alpn).map_err(q)?;
        c.verify_peer(s.verify_peer);
        if let Some(ca) = &s.ca_file {
            c.load_verify_locations_from_file(&ca.to_string_lossy()).map_err(q)?;
        }
        Self::apply_limits(&mut c, &s);
        Ok(c)
    }

    fn apply_limits(c: &mut quiche::Config, s: &ConfigState) {
        let l = s.limits;
        c.set_max_idle_timeout(l.idle_timeout_ms);
        c.set_initial_max_streams_bidi(l.max_streams_bidi);
        c.set_initial_max_streams_uni(l.max_streams_uni);
        c.set_initial_max_data(l.initial_max_data);
        c.set_initial_max_stream_data_bidi_local(l.initial_max_stream_data_bidi_local);
        c.set_initial_max_stream_data_bidi_remote(l.initial_max_stream_data_bidi_remote);
        c.set_initial_max_stream_data_uni(l.initial_max_stream_data_uni);
        c.set_max_send_udp_payload_size(l.max_udp_payload_size as usize);
        c.set_max_recv_udp_payload_size(65_527);
        c.set_cc_algorithm(s.cc.to_quiche());
        c.set_disable_active_migration(false);
        c.set_active_connection_id_limit(4);
        // DPLPMTUD (RFC 8899): probe for a larger path MTU than the start.
        c.discover_pmtu(true);
        if s.early_data {
            c.enable_early_data();
        }
        c.enable_pacing(s.pacing);
        if let Some(curves) = &s.curves {
            // Checked by set_curves.
            let _ = c.set_curves_list(curves);
        }
    }

    /// Paces sending (the default) or sends as soon as the congestion window
    /// allows.
    pub fn set_pacing(&self, enabled: bool) -> Result<()> {
        self.update(|s| {
            s.pacing = enabled;
            Ok(())
        })
    }

    /// Restricts the TLS key-exchange groups ("X25519:P-256"; names as
    /// BoringSSL knows them, e.g. X25519MLKEM768, X25519, P-256, P-384).
    /// An unknown name is rejected and nothing changes.
    pub fn set_curves(&self, curves: &str) -> Result<()> {
        self.update(|s| {
            let bad = || {
                Error::new(haquic_result::HAQUIC_ERR_INVALID_ARGUMENT, format!("unknown or empty key-exchange group list '{curves}'"))
            };
            if curves.is_empty() || curves.contains('\0') {
                return Err(bad());
            }
            let mut probe = boring::ssl::SslContextBuilder::new(boring::ssl::SslMethod::tls()).map_err(|_| bad())?;
            probe.set_curves_list(curves).map_err(|_| bad())?;
            s.curves = Some(curves.to_string());
            Ok(())
        })
    }

    /// Accepts (or not) 0-RTT data from resuming clients.
    pub fn set_early_data(&self, enabled: bool) -> Result<()> {
        self.update(|s| {
            s.early_data = enabled;
            Ok(())
        })
    }

    /// Checks that the configuration can build an engine.
    pub fn check(&self) -> Result<()> {
        let r = self.lock_state().and_then(|s| {
            if s.identity.is_none() {
                return Err(Error::new(
                    haquic_result::HAQUIC_ERR_INCOMPLETE_CONFIG,
                    "no certificate loaded: a QUIC listener needs a certificate chain and key",
                ));
            }
            s.limits.validate()?;
            validate_alpn(&s.alpn)
        });
        self.record(&r);
        r
    }

    /// Builds the quiche configuration these settings describe.
    pub fn to_quiche(&self) -> Result<quiche::Config> {
        self.check()?;
        let s = self.snapshot()?;
        let id = s.identity.as_ref().expect("checked above");
        let tls = id.sni_context_builder(&s.sni_identities)?;
        let q = |e: quiche::Error| Error::new(haquic_result::HAQUIC_ERR_TLS, format!("quiche: {e}"));
        let mut c = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, tls).map_err(q)?;
        let alpn: Vec<&[u8]> = s.alpn.iter().map(|p| p.as_slice()).collect();
        c.set_application_protos(&alpn).map_err(q)?;
        Self::apply_limits(&mut c, &s);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_h3() {
        Limits::default().validate().unwrap();
        let c = Config::new();
        let s = c.snapshot().unwrap();
        assert_eq!(s.alpn, vec![b"h3".to_vec()]);
        assert_eq!(s.cc, CcAlgorithm::Cubic);
    }

    #[test]
    fn every_bound_rejects_both_edges() {
        for b in BOUNDS {
            for bad in [b.min.wrapping_sub(1), b.max + 1] {
                if b.min == 0 && bad == u64::MAX {
                    continue;
                }
                // Find the field by probing: set every field to its default
                // and the one named to `bad` through a tiny table of setters.
                let mut l = Limits::default();
                let field: &mut u64 = match b.name {
                    "idle_timeout_ms" => &mut l.idle_timeout_ms,
                    "max_streams_bidi" => &mut l.max_streams_bidi,
                    "max_streams_uni" => &mut l.max_streams_uni,
                    "initial_max_data" => &mut l.initial_max_data,
                    "initial_max_stream_data_bidi_local" => &mut l.initial_max_stream_data_bidi_local,
                    "initial_max_stream_data_bidi_remote" => &mut l.initial_max_stream_data_bidi_remote,
                    "initial_max_stream_data_uni" => &mut l.initial_max_stream_data_uni,
                    "max_field_section_size" => &mut l.max_field_section_size,
                    "max_udp_payload_size" => &mut l.max_udp_payload_size,
                    other => panic!("bound {other} has no field in this test"),
                };
                *field = bad;
                assert_eq!((b.get)(&l), bad);
                let e = l.validate().unwrap_err();
                assert_eq!(e.code, haquic_result::HAQUIC_ERR_OUT_OF_RANGE);
                assert!(e.reason.starts_with(b.name), "{}", e.reason);
            }
        }
    }

    #[test]
    fn failed_update_changes_nothing_and_is_recorded() {
        let c = Config::new();
        c.set_cc_algorithm("bbr").unwrap();
        assert!(c.last_error().is_none());
        let e = c.set_cc_algorithm("vegas").unwrap_err();
        assert_eq!(e.code, haquic_result::HAQUIC_ERR_UNKNOWN_CC_ALGORITHM);
        assert_eq!(c.snapshot().unwrap().cc, CcAlgorithm::Bbr2);
        assert!(c.last_error().unwrap().reason.contains("vegas"));
        c.set_idle_timeout(5_000).unwrap();
        assert!(c.last_error().is_none());
    }

    #[test]
    fn alpn_wire_parsing() {
        assert_eq!(parse_alpn_wire(b"\x02h3\x05h3-29").unwrap(), vec![b"h3".to_vec(), b"h3-29".to_vec()]);
        assert_eq!(parse_alpn_wire(b"").unwrap_err().code, haquic_result::HAQUIC_ERR_BAD_ALPN);
        assert!(parse_alpn_wire(b"\x05h3").unwrap_err().reason.contains("truncated"));
        assert!(parse_alpn_wire(b"\x02h3\x00").unwrap_err().reason.contains("empty"));
    }

    #[test]
    fn check_needs_identity_and_builds_quiche_config() {
        let c = Config::new();
        assert_eq!(c.check().unwrap_err().code, haquic_result::HAQUIC_ERR_INCOMPLETE_CONFIG);
        let (cert, key) = crate::engine::tls::tests_support::self_signed("q.test");
        c.load_cert_chain_and_key_pem(&cert, &key).unwrap();
        c.check().unwrap();
        c.to_quiche().unwrap();
    }
}
