//! `haquic_config_*`: the configuration handle.
//!
//! A configuration is built at the host's configuration time: create it, load
//! a certificate, set ALPN, limits and congestion control, check it. Each
//! setter validates its input and returns a distinct code; the reason, naming
//! the offending file or field, is then available from
//! `haquic_config_last_error`.

use super::{
    ArcHandle, borrow_cstr_array, borrow_out_slice, copy_out, ffi_panic_boundary, handle_ref,
    handle_unref, new_handle, read_versioned, to_code, try_out, try_ref,
    versioned_size, write_versioned,
};
use crate::engine::config::{Config, Limits, parse_alpn_wire};
use crate::error::{Error, haquic_result};
use std::ffi::{CStr, OsStr};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An engine configuration: TLS identity, ALPN, limits and congestion
/// control.
///
/// Refcounted: `haquic_config_new` returns the first reference,
/// `haquic_config_ref` adds one and `haquic_config_unref` drops one. Engines
/// created from it take their own reference.
pub struct haquic_config {
    _private: [u8; 0],
}

impl ArcHandle for haquic_config {
    type Rust = Config;
}

/// Transport and HTTP/3 limits.
///
/// Versioned: `struct_size` must hold `sizeof(haquic_limits)` as the caller
/// compiled it. Initialise it with `HAQUIC_LIMITS_INIT(&limits)` (which fills
/// in the defaults), then change the fields you need.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct haquic_limits {
    /// `sizeof(haquic_limits)` as seen by the caller.
    pub struct_size: u32,
    /// Reserved, must be 0.
    pub reserved: u32,
    /// Idle timeout in milliseconds. Default 30000, range [1, 3600000].
    pub idle_timeout_ms: u64,
    /// Concurrent bidirectional streams a peer may open. Default 100, range
    /// [1, 65536].
    pub max_streams_bidi: u64,
    /// Concurrent unidirectional streams a peer may open. Default 3, range
    /// [3, 1024] (HTTP/3 needs its control and QPACK streams).
    pub max_streams_uni: u64,
    /// Connection flow-control window in bytes. Default 10 MiB, range
    /// [1 KiB, 1 GiB].
    pub initial_max_data: u64,
    /// Stream window for locally opened bidirectional streams. Default 1 MiB,
    /// range [1 KiB, 1 GiB].
    pub initial_max_stream_data_bidi_local: u64,
    /// Stream window for peer-opened bidirectional streams (requests).
    /// Default 1 MiB, range [1 KiB, 1 GiB].
    pub initial_max_stream_data_bidi_remote: u64,
    /// Stream window for unidirectional streams. Default 1 MiB, range
    /// [1 KiB, 1 GiB].
    pub initial_max_stream_data_uni: u64,
    /// Largest request header section accepted, in bytes. Default 65536,
    /// range [256, 16 MiB].
    pub max_field_section_size: u64,
    /// Largest UDP payload sent. Datagrams start at 1200 bytes; path MTU
    /// discovery (DPLPMTUD) raises them up to this once a probe of the size
    /// is acknowledged. Default 1452 (the most a 1500-byte MTU carries over
    /// IPv6), range [1200, 65527].
    pub max_udp_payload_size: u64,
}

/// The smallest `struct_size` accepted: the first published layout.
const LIMITS_V1_SIZE: usize = std::mem::size_of::<haquic_limits>();

impl From<Limits> for haquic_limits {
    fn from(l: Limits) -> haquic_limits {
        haquic_limits {
            struct_size: std::mem::size_of::<haquic_limits>() as u32,
            reserved: 0,
            idle_timeout_ms: l.idle_timeout_ms,
            max_streams_bidi: l.max_streams_bidi,
            max_streams_uni: l.max_streams_uni,
            initial_max_data: l.initial_max_data,
            initial_max_stream_data_bidi_local: l.initial_max_stream_data_bidi_local,
            initial_max_stream_data_bidi_remote: l.initial_max_stream_data_bidi_remote,
            initial_max_stream_data_uni: l.initial_max_stream_data_uni,
            max_field_section_size: l.max_field_section_size,
            max_udp_payload_size: l.max_udp_payload_size,
        }
    }
}

impl From<haquic_limits> for Limits {
    fn from(l: haquic_limits) -> Limits {
        Limits {
            idle_timeout_ms: l.idle_timeout_ms,
            max_streams_bidi: l.max_streams_bidi,
            max_streams_uni: l.max_streams_uni,
            initial_max_data: l.initial_max_data,
            initial_max_stream_data_bidi_local: l.initial_max_stream_data_bidi_local,
            initial_max_stream_data_bidi_remote: l.initial_max_stream_data_bidi_remote,
            initial_max_stream_data_uni: l.initial_max_stream_data_uni,
            max_field_section_size: l.max_field_section_size,
            max_udp_payload_size: l.max_udp_payload_size,
        }
    }
}

fn check_struct_size(size: usize) -> Result<(), Error> {
    let ours = std::mem::size_of::<haquic_limits>();
    if size < LIMITS_V1_SIZE || size > ours {
        return Err(Error::new(
            haquic_result::HAQUIC_ERR_STRUCT_SIZE,
            format!(
                "haquic_limits.struct_size is {size}; this library accepts {LIMITS_V1_SIZE} to \
                 {ours} (initialise it with HAQUIC_LIMITS_INIT)"
            ),
        ));
    }
    Ok(())
}

fn path_of(s: &CStr) -> &Path {
    Path::new(OsStr::from_bytes(s.to_bytes()))
}

/// A NULL argument, reported through the configuration's last error.
fn null_arg(cfg: &Config, name: &str) -> haquic_result {
    let r: Result<(), Error> = Err(Error::new(haquic_result::HAQUIC_ERR_NULL, format!("argument '{name}' is NULL")));
    cfg.record(&r);
    to_code(r)
}

/// Records the outcome on the configuration and returns its code.
fn finish(cfg: &Config, r: Result<(), Error>) -> haquic_result {
    cfg.record(&r);
    to_code(r)
}

/// Fills `limits` with the default limits and sets its `struct_size`.
///
/// `struct_size` is `sizeof(haquic_limits)` as the caller compiled it; the
/// `HAQUIC_LIMITS_INIT(ptr)` macro passes it.
///
/// Returns `HAQUIC_ERR_NULL` for NULL, `HAQUIC_ERR_STRUCT_SIZE` for a size
/// this library does not know. `limits` is written only on success.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_limits_init(limits: *mut haquic_limits, struct_size: usize) -> haquic_result {
    ffi_panic_boundary! {
        if limits.is_null() {
            return haquic_result::HAQUIC_ERR_NULL;
        }
        if let Err(e) = check_struct_size(struct_size) {
            return e.code;
        }
        let mut value = haquic_limits::from(Limits::default());
        value.struct_size = struct_size as u32;
        write_versioned(limits, &value, struct_size);
        haquic_result::HAQUIC_OK
    }
}

/// Creates a configuration with default settings: ALPN `h3`, CUBIC, the
/// default limits, and no certificate.
///
/// Returns a new reference: release it with `haquic_config_unref`. Returns
/// NULL only if the library panicked.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_new() -> *const haquic_config {
    ffi_panic_boundary! {
        new_handle::<haquic_config>(Config::new())
    }
}

/// Adds a reference to `config`. NULL is ignored.
///
/// Returns `config`, as a new reference: release it with
/// `haquic_config_unref`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_ref(config: *const haquic_config) -> *const haquic_config {
    ffi_panic_boundary! {
        handle_ref(config);
        config
    }
}

/// Drops a reference to `config`; the last one frees it. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_unref(config: *const haquic_config) {
    ffi_panic_boundary! {
        handle_unref(config)
    }
}

/// Loads a PEM certificate chain (leaf first) and its PEM private key from
/// files, checks that they parse and that the key matches the certificate,
/// and makes them the configuration's identity, replacing any earlier one.
///
/// For a combined PEM file holding both (HAProxy's `crt` format), pass the
/// same path twice.
///
/// Returns `HAQUIC_ERR_FILE_NOT_FOUND` or `HAQUIC_ERR_FILE_UNREADABLE` for
/// a file that cannot be read, `HAQUIC_ERR_BAD_CERTIFICATE`,
/// `HAQUIC_ERR_BAD_PRIVATE_KEY` or `HAQUIC_ERR_KEY_MISMATCH` for bad
/// content; the reason (from `haquic_config_last_error`) names the file. On
/// any error the configuration is unchanged.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_load_cert_chain_and_key(
    config: *const haquic_config,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(cert) = super::borrow_cstr(cert_path) else { return null_arg(cfg, "cert_path") };
        let Some(key) = super::borrow_cstr(key_path) else { return null_arg(cfg, "key_path") };
        finish(cfg, cfg.load_cert_chain_and_key(path_of(cert), path_of(key)))
    }
}

/// Like `haquic_config_load_cert_chain_and_key`, from PEM buffers in memory.
/// The buffers are copied; the caller keeps ownership.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_load_cert_chain_and_key_pem(
    config: *const haquic_config,
    cert_pem: *const u8,
    cert_pem_len: usize,
    key_pem: *const u8,
    key_pem_len: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(cert) = super::borrow_slice(cert_pem, cert_pem_len) else { return null_arg(cfg, "cert_pem") };
        let Some(key) = super::borrow_slice(key_pem, key_pem_len) else { return null_arg(cfg, "key_pem") };
        finish(cfg, cfg.load_cert_chain_and_key_pem(cert, key))
    }
}

/// Adds a certificate chain and key, from PEM files, served to clients whose
/// server name (SNI) matches one of the certificate's names: its DNS subject
/// alternative names, else its common name (`*.example.com` stands for one
/// label). The first added certificate that matches wins; the one loaded
/// with `haquic_config_load_cert_chain_and_key` is served when none does,
/// or when the client sends no server name. Each certificate goes out with
/// its own chain. At most 256 can be added (`HAQUIC_ERR_LIMIT`).
///
/// Errors are those of `haquic_config_load_cert_chain_and_key`, plus
/// `HAQUIC_ERR_BAD_CERTIFICATE` for a certificate that names no server. On
/// any error the configuration is unchanged.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_add_certificate(
    config: *const haquic_config,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(cert) = super::borrow_cstr(cert_path) else { return null_arg(cfg, "cert_path") };
        let Some(key) = super::borrow_cstr(key_path) else { return null_arg(cfg, "key_path") };
        finish(cfg, cfg.add_sni_certificate(path_of(cert), path_of(key)))
    }
}

/// Like `haquic_config_add_certificate`, from PEM buffers in memory. The
/// buffers are copied; the caller keeps ownership.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_add_certificate_pem(
    config: *const haquic_config,
    cert_pem: *const u8,
    cert_pem_len: usize,
    key_pem: *const u8,
    key_pem_len: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(cert) = super::borrow_slice(cert_pem, cert_pem_len) else { return null_arg(cfg, "cert_pem") };
        let Some(key) = super::borrow_slice(key_pem, key_pem_len) else { return null_arg(cfg, "key_pem") };
        finish(cfg, cfg.add_sni_certificate_pem(cert, key))
    }
}

/// Sets the ALPN protocols, in preference order, from `count` C strings.
///
/// 1 to 16 protocols, each 1 to 255 printable ASCII bytes; otherwise
/// `HAQUIC_ERR_BAD_ALPN` and the configuration is unchanged.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_alpn(
    config: *const haquic_config,
    protocols: *const *const c_char,
    count: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(list) = borrow_cstr_array(protocols, count) else { return null_arg(cfg, "protocols") };
        let protos = list.iter().map(|p| p.to_bytes().to_vec()).collect();
        finish(cfg, cfg.set_alpn(protos))
    }
}

/// A C string argument as UTF-8; `HAQUIC_ERR_NOT_UTF8` names `what` otherwise.
fn utf8<'a>(s: &'a std::ffi::CStr, what: &str) -> crate::error::Result<&'a str> {
    s.to_str().map_err(|_| Error::new(haquic_result::HAQUIC_ERR_NOT_UTF8, format!("{what} is not valid UTF-8")))
}

/// Restricts the TLS key-exchange groups to `curves`, a colon-separated
/// list in preference order ("X25519:P-256"), as HAProxy's `curves` and
/// `ssl-default-bind-curves`. Without it BoringSSL's defaults apply:
/// X25519MLKEM768 (post-quantum hybrid), X25519, P-256, P-384.
///
/// An unknown group name gives `HAQUIC_ERR_INVALID_ARGUMENT` and changes
/// nothing.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_curves(config: *const haquic_config, curves: *const c_char) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(curves) = super::borrow_cstr(curves) else { return null_arg(cfg, "curves") };
        finish(cfg, utf8(curves, "group list").and_then(|c| cfg.set_curves(c)))
    }
}

/// Sets the ALPN protocols from wire format: each protocol preceded by its
/// length byte, as HAProxy stores a bind line's `alpn`.
///
/// A truncated or empty list gives `HAQUIC_ERR_BAD_ALPN`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_alpn_wire(
    config: *const haquic_config,
    wire: *const u8,
    wire_len: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(wire) = super::borrow_slice(wire, wire_len) else { return null_arg(cfg, "wire") };
        finish(cfg, parse_alpn_wire(wire).and_then(|p| cfg.set_alpn(p)))
    }
}

/// Copies the ALPN list, in wire format, into `buf`, and its length into
/// `*out_len`. The wire list is never longer than `HAQUIC_ALPN_WIRE_MAX`.
///
/// Returns `HAQUIC_ERR_BUFFER_TOO_SMALL` (and writes nothing) when `buf_len`
/// is too small.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_get_alpn_wire(
    config: *const haquic_config,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(buf) = borrow_out_slice(buf, buf_len) else { return haquic_result::HAQUIC_ERR_NULL };
        let out_len = try_out!(out_len);
        let state = match cfg.snapshot() {
            Ok(s) => s,
            Err(e) => return e.code,
        };
        let wire: Vec<u8> = state.alpn.iter().flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied())).collect();
        copy_out(&wire, buf, out_len)
    }
}

/// Sets every limit at once from a `haquic_limits` initialised with
/// `HAQUIC_LIMITS_INIT`.
///
/// Each field is checked against its range; the first one out of range gives
/// `HAQUIC_ERR_OUT_OF_RANGE` with a reason naming it, and nothing changes.
/// An unknown `struct_size` gives `HAQUIC_ERR_STRUCT_SIZE`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_limits(
    config: *const haquic_config,
    limits: *const haquic_limits,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(size) = versioned_size(limits) else { return null_arg(cfg, "limits") };
        if let Err(e) = check_struct_size(size) {
            return finish(cfg, Err(e));
        }
        let mut value = haquic_limits::from(Limits::default());
        read_versioned(limits, &mut value, size);
        if value.reserved != 0 {
            return finish(cfg, Err(Error::new(
                haquic_result::HAQUIC_ERR_INVALID_ARGUMENT,
                "haquic_limits.reserved must be 0",
            )));
        }
        finish(cfg, cfg.set_limits(value.into()))
    }
}

/// Copies the current limits into `*limits`, whose `struct_size` the caller
/// has set (with `HAQUIC_LIMITS_INIT`). Written only on success.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_get_limits(
    config: *const haquic_config,
    limits: *mut haquic_limits,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(size) = versioned_size(limits as *const haquic_limits) else { return haquic_result::HAQUIC_ERR_NULL };
        if let Err(e) = check_struct_size(size) {
            return e.code;
        }
        match cfg.snapshot() {
            Ok(s) => {
                let mut value = haquic_limits::from(s.limits);
                value.struct_size = size as u32;
                write_versioned(limits, &value, size);
                haquic_result::HAQUIC_OK
            }
            Err(e) => e.code,
        }
    }
}

/// Sets the idle timeout, in milliseconds, in [1, 3600000].
///
/// Out of range gives `HAQUIC_ERR_OUT_OF_RANGE` and changes nothing.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_idle_timeout(config: *const haquic_config, timeout_ms: u64) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        finish(cfg, cfg.set_idle_timeout(timeout_ms))
    }
}

/// Sets the congestion-control algorithm by name: `cubic` (the default),
/// `reno` or `newreno`, `bbr2` or `bbr`. Case does not matter.
///
/// An unknown name gives `HAQUIC_ERR_UNKNOWN_CC_ALGORITHM` and changes
/// nothing.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_cc_algorithm(config: *const haquic_config, name: *const c_char) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(name) = super::borrow_cstr(name) else { return null_arg(cfg, "name") };
        finish(cfg, utf8(name, "congestion-control name").and_then(|n| cfg.set_cc_algorithm(n)))
    }
}

/// Returns the canonical name of the congestion-control algorithm: "cubic",
/// "reno" or "bbr2".
///
/// Static: valid for the life of the process. NULL if `config` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_get_cc_algorithm(config: *const haquic_config) -> *const c_char {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        match cfg.snapshot().map(|s| s.cc) {
            Ok(crate::engine::CcAlgorithm::Cubic) => c"cubic".as_ptr(),
            Ok(crate::engine::CcAlgorithm::Reno) => c"reno".as_ptr(),
            Ok(crate::engine::CcAlgorithm::Bbr2) => c"bbr2".as_ptr(),
            Err(_) => std::ptr::null(),
        }
    }
}

/// Copies the loaded certificate's subject (for example "CN=example.com")
/// into `buf`, without a terminating NUL, and its length into `*out_len`.
///
/// Returns `HAQUIC_ERR_INCOMPLETE_CONFIG` when no certificate is loaded,
/// `HAQUIC_ERR_BUFFER_TOO_SMALL` (writing nothing) when `buf_len` is short.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_get_certificate_subject(
    config: *const haquic_config,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(buf) = borrow_out_slice(buf as *mut u8, buf_len) else { return haquic_result::HAQUIC_ERR_NULL };
        let out_len = try_out!(out_len);
        match cfg.snapshot() {
            Ok(s) => match s.identity {
                Some(id) => copy_out(id.subject().as_bytes(), buf, out_len),
                None => haquic_result::HAQUIC_ERR_INCOMPLETE_CONFIG,
            },
            Err(e) => e.code,
        }
    }
}

/// Checks that the configuration is complete enough to build an engine (a
/// certificate is loaded, every setting is valid, and quiche accepts it).
///
/// Returns `HAQUIC_ERR_INCOMPLETE_CONFIG` without a certificate.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_check(config: *const haquic_config) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        finish(cfg, cfg.to_quiche().map(|_| ()))
    }
}

/// Returns the reason the last call on `config` failed, naming the offending
/// file, field or value, or "" if the last call succeeded.
///
/// Borrowed: valid until the next call on this configuration. NULL if
/// `config` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_last_error(config: *const haquic_config) -> *const c_char {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        cfg.last_error_ptr()
    }
}

/// Sets the cluster secret (1 to 1024 bytes) from which Retry and
/// stateless-reset tokens derive, so that every process of a cluster or a
/// reload accepts each other's tokens (HAProxy's `cluster-secret`). Without
/// one, a random secret is used per engine. Read when an engine is created.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_cluster_secret(
    config: *const haquic_config,
    secret: *const u8,
    secret_len: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let Some(secret) = super::borrow_slice(secret, secret_len) else { return null_arg(cfg, "secret") };
        finish(cfg, cfg.set_cluster_secret(secret))
    }
}

/// Client role: whether to verify the server's certificate (the default), and
/// the CA file to verify it against (NULL: the system's default paths).
///
/// A CA file that does not exist gives `HAQUIC_ERR_FILE_NOT_FOUND`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_verify_peer(
    config: *const haquic_config,
    verify: bool,
    ca_file: *const c_char,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let ca = super::borrow_cstr(ca_file).map(path_of);
        finish(cfg, cfg.set_verify_peer(verify, ca))
    }
}

/// Accepts 0-RTT (early data) from resuming clients when `enabled`
/// (HAProxy's `allow-0rtt`). Off by default: early data can be replayed, so
/// only enable it for idempotent traffic.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_early_data(config: *const haquic_config, enabled: bool) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        finish(cfg, cfg.set_early_data(enabled))
    }
}

/// Paces sending to the times quiche computes from the congestion controller
/// (on by default), or sends bursts as soon as the window allows. The engine
/// holds paced datagrams and reflects them in `haquic_worker_next_timeout`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_config_set_pacing(config: *const haquic_config, enabled: bool) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        finish(cfg, cfg.set_pacing(enabled))
    }
}
