//! Result codes shared by every layer, and the error value that carries one.
//!
//! [`haquic_result`] is the single `#[repr(C)]` result enum of the C ABI.
//! Its values are explicit and permanent: a retired code keeps its number and
//! a new code takes the next free one. [`Error`] pairs a code with a
//! human-readable reason that the host can print (HAProxy puts it in its
//! configuration error messages).

use std::ffi::CStr;
use std::fmt;

/// The result of every fallible `haquic_*` function.
///
/// `HAQUIC_OK` is 0; every other value is an error. The numbers are part of
/// the ABI and are never reused. `haquic_strerror()` gives a short text for
/// each.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum haquic_result {
    /// Success.
    HAQUIC_OK = 0,
    /// A required pointer argument was NULL.
    HAQUIC_ERR_NULL = 1,
    /// The library caught an internal panic. The object concerned is unusable.
    HAQUIC_ERR_PANIC = 2,
    /// An argument is invalid in a way no more specific code describes.
    HAQUIC_ERR_INVALID_ARGUMENT = 3,
    /// A string argument is not valid UTF-8.
    HAQUIC_ERR_NOT_UTF8 = 4,
    /// A file does not exist.
    HAQUIC_ERR_FILE_NOT_FOUND = 5,
    /// A file exists but cannot be read (permissions, a directory, an I/O error).
    HAQUIC_ERR_FILE_UNREADABLE = 6,
    /// The certificate chain is not valid PEM or contains no certificate.
    HAQUIC_ERR_BAD_CERTIFICATE = 7,
    /// The private key is not valid PEM or is of an unsupported type.
    HAQUIC_ERR_BAD_PRIVATE_KEY = 8,
    /// The private key does not belong to the certificate.
    HAQUIC_ERR_KEY_MISMATCH = 9,
    /// The ALPN list is empty, malformed, or has an empty or over-long entry.
    HAQUIC_ERR_BAD_ALPN = 10,
    /// A numeric setting is outside its allowed range.
    HAQUIC_ERR_OUT_OF_RANGE = 11,
    /// The congestion-control algorithm name is not one haquic knows.
    HAQUIC_ERR_UNKNOWN_CC_ALGORITHM = 12,
    /// A versioned struct carries a size this library does not accept.
    HAQUIC_ERR_STRUCT_SIZE = 13,
    /// The configuration is incomplete (for example, no certificate loaded).
    HAQUIC_ERR_INCOMPLETE_CONFIG = 14,
    /// The TLS library rejected the setting.
    HAQUIC_ERR_TLS = 15,
    /// The object is closed. It can still be queried, but not acted on.
    HAQUIC_ERR_CLOSED = 16,
    /// The call came from a thread other than the object's owner.
    HAQUIC_ERR_WRONG_THREAD = 17,
    /// The output buffer is too small. Nothing was written.
    HAQUIC_ERR_BUFFER_TOO_SMALL = 18,
    /// Nothing to do now: no event, no datagram, no flow-control credit, or
    /// the handshake is not complete. Try again after the next wake-up.
    HAQUIC_ERR_WOULD_BLOCK = 19,
    /// A bounded queue is full; the item was dropped and counted.
    HAQUIC_ERR_QUEUE_FULL = 20,
    /// A QUIC or HTTP/3 protocol error.
    HAQUIC_ERR_PROTOCOL = 21,
    /// A socket operation failed.
    HAQUIC_ERR_IO = 22,
    /// A configured or negotiated limit was reached (streams, connections).
    HAQUIC_ERR_LIMIT = 23,
    /// Not allowed in the object's current state (for example, headers twice).
    HAQUIC_ERR_INVALID_STATE = 24,
}

impl haquic_result {
    /// Every code, in numeric order. Used by `haquic_strerror` tests and the
    /// ABI check.
    pub const ALL: [haquic_result; 25] = [
        haquic_result::HAQUIC_OK,
        haquic_result::HAQUIC_ERR_NULL,
        haquic_result::HAQUIC_ERR_PANIC,
        haquic_result::HAQUIC_ERR_INVALID_ARGUMENT,
        haquic_result::HAQUIC_ERR_NOT_UTF8,
        haquic_result::HAQUIC_ERR_FILE_NOT_FOUND,
        haquic_result::HAQUIC_ERR_FILE_UNREADABLE,
        haquic_result::HAQUIC_ERR_BAD_CERTIFICATE,
        haquic_result::HAQUIC_ERR_BAD_PRIVATE_KEY,
        haquic_result::HAQUIC_ERR_KEY_MISMATCH,
        haquic_result::HAQUIC_ERR_BAD_ALPN,
        haquic_result::HAQUIC_ERR_OUT_OF_RANGE,
        haquic_result::HAQUIC_ERR_UNKNOWN_CC_ALGORITHM,
        haquic_result::HAQUIC_ERR_STRUCT_SIZE,
        haquic_result::HAQUIC_ERR_INCOMPLETE_CONFIG,
        haquic_result::HAQUIC_ERR_TLS,
        haquic_result::HAQUIC_ERR_CLOSED,
        haquic_result::HAQUIC_ERR_WRONG_THREAD,
        haquic_result::HAQUIC_ERR_BUFFER_TOO_SMALL,
        haquic_result::HAQUIC_ERR_WOULD_BLOCK,
        haquic_result::HAQUIC_ERR_QUEUE_FULL,
        haquic_result::HAQUIC_ERR_PROTOCOL,
        haquic_result::HAQUIC_ERR_IO,
        haquic_result::HAQUIC_ERR_LIMIT,
        haquic_result::HAQUIC_ERR_INVALID_STATE,
    ];

    /// Maps a raw integer from C back to a code, if it is one.
    pub fn from_raw(raw: i64) -> Option<haquic_result> {
        Self::ALL.iter().copied().find(|r| *r as i64 == raw)
    }

    /// A short, static, human-readable description of the code.
    pub fn description(self) -> &'static str {
        self.description_cstr().to_str().unwrap_or("?")
    }

    /// The description as a NUL-terminated string, for the C ABI.
    pub fn description_cstr(self) -> &'static CStr {
        use haquic_result::*;
        match self {
            HAQUIC_OK => c"success",
            HAQUIC_ERR_NULL => c"a required pointer argument was NULL",
            HAQUIC_ERR_PANIC => c"internal panic caught at the API boundary",
            HAQUIC_ERR_INVALID_ARGUMENT => c"invalid argument",
            HAQUIC_ERR_NOT_UTF8 => c"string is not valid UTF-8",
            HAQUIC_ERR_FILE_NOT_FOUND => c"file not found",
            HAQUIC_ERR_FILE_UNREADABLE => c"file cannot be read",
            HAQUIC_ERR_BAD_CERTIFICATE => c"bad or missing PEM certificate",
            HAQUIC_ERR_BAD_PRIVATE_KEY => c"bad or missing PEM private key",
            HAQUIC_ERR_KEY_MISMATCH => c"private key does not match the certificate",
            HAQUIC_ERR_BAD_ALPN => c"bad ALPN protocol list",
            HAQUIC_ERR_OUT_OF_RANGE => c"value out of range",
            HAQUIC_ERR_UNKNOWN_CC_ALGORITHM => c"unknown congestion-control algorithm",
            HAQUIC_ERR_STRUCT_SIZE => c"unsupported struct size",
            HAQUIC_ERR_INCOMPLETE_CONFIG => c"configuration is incomplete",
            HAQUIC_ERR_TLS => c"TLS library error",
            HAQUIC_ERR_CLOSED => c"object is closed",
            HAQUIC_ERR_WRONG_THREAD => c"called from a thread that does not own the object",
            HAQUIC_ERR_BUFFER_TOO_SMALL => c"output buffer too small",
            HAQUIC_ERR_WOULD_BLOCK => c"nothing to do now; try again after the next wake-up",
            HAQUIC_ERR_QUEUE_FULL => c"queue full; the item was dropped and counted",
            HAQUIC_ERR_PROTOCOL => c"QUIC or HTTP/3 protocol error",
            HAQUIC_ERR_IO => c"socket error",
            HAQUIC_ERR_LIMIT => c"limit reached",
            HAQUIC_ERR_INVALID_STATE => c"not allowed in the current state",
        }
    }
}

/// An error: a result code and the reason, which names the offending input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The code returned across the C ABI.
    pub code: haquic_result,
    /// A sentence for a human, such as "cannot open certificate file
    /// '/etc/x.pem': No such file or directory".
    pub reason: String,
}

impl Error {
    /// Builds an error from a code and a reason.
    pub fn new(code: haquic_result, reason: impl Into<String>) -> Error {
        Error { code, reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Error {}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_ordered() {
        for (i, code) in haquic_result::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code:?} is out of place");
            assert_eq!(haquic_result::from_raw(i as i64), Some(*code));
        }
        assert_eq!(haquic_result::from_raw(haquic_result::ALL.len() as i64), None);
        assert_eq!(haquic_result::from_raw(-1), None);
    }

    #[test]
    fn descriptions_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for code in haquic_result::ALL {
            assert!(seen.insert(code.description()), "{code:?} shares its text");
        }
    }
}
