//! ABI checks against the committed header, `include/haquic.h`.
//!
//! 1. The header cbindgen generates from the current sources must equal the
//!    committed one, byte for byte: a stale header fails here (and so fails
//!    `make test`). Fix it with `make header`.
//! 2. With the `abi-check` feature, build.rs runs bindgen over the committed
//!    header. Every struct and enum it finds must match the Rust definitions
//!    in size, alignment, field offsets and values, and none may be missing
//!    from the lists below.

use std::path::Path;

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/haquic.h"));

fn committed() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/haquic.h");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

#[test]
fn committed_header_is_fresh() {
    let committed = committed();
    if committed != GENERATED {
        let first = committed
            .lines()
            .zip(GENERATED.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(GENERATED.lines().count()));
        panic!(
            "include/haquic.h is stale: it differs from the header generated from the sources \
             at line {}\n  committed: {:?}\n  generated: {:?}\nRun `make header` and commit the result.",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            GENERATED.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[cfg(feature = "abi-check")]
mod bindgen_roundtrip {
    #![allow(non_camel_case_types, non_upper_case_globals, dead_code, non_snake_case)]
    use haquic::error::haquic_result;
    use haquic::ffi::config::haquic_limits;
    use haquic::ffi::conn::{haquic_conn_stats, haquic_header};
    use haquic::ffi::engine::{haquic_engine_options, haquic_event, haquic_event_type, haquic_stats};
    use std::mem::{align_of, offset_of, size_of};

    mod c {
        include!(concat!(env!("OUT_DIR"), "/abi_bindings.rs"));
    }

    /// Asserts size, alignment and each named field's offset.
    macro_rules! same_struct {
        ($name:ident { $($field:ident),* $(,)? }) => {{
            assert_eq!(size_of::<c::$name>(), size_of::<$name>(), "size of {}", stringify!($name));
            assert_eq!(align_of::<c::$name>(), align_of::<$name>(), "align of {}", stringify!($name));
            $(
                assert_eq!(
                    offset_of!(c::$name, $field),
                    offset_of!($name, $field),
                    "offset of {}.{}", stringify!($name), stringify!($field)
                );
            )*
            stringify!($name)
        }};
    }

    #[test]
    fn structs_match() {
        let checked = [
            same_struct!(haquic_header { name, name_len, value, value_len }),
            same_struct!(haquic_conn_stats {
                struct_size, established, packets_in, packets_out, bytes_in, bytes_out, lost,
                retransmitted, rtt_us, cwnd, migrations, open_streams, close_code, close_is_app,
                closed, resumed, reserved,
            }),
            same_struct!(haquic_engine_options {
                struct_size, workers, dispatch_queue_capacity, out_queue_capacity,
                max_connections_per_worker, retry_threshold, stateless_resets_per_second,
                force_retry, reserved, qlog_dir,
            }),
            same_struct!(haquic_event {
                struct_size, kind, conn, stream, code, headers, headers_len, reason, reason_len,
                fin, is_app_error, fd, fd_generation,
            }),
            same_struct!(haquic_stats {
                struct_size, reserved, conns_open, conns_accepted, conns_closed, handshakes,
                packets_in, packets_out, bytes_in, bytes_out, lost, retransmitted, requests,
                requests_rejected, h3_message_errors, h3_conn_errors,
                streams_aborted_before_headers, drop_queue_full, drop_unparsable,
                drop_unknown_cid, drop_bad_token, drop_out_queue_full, drop_conn_limit,
                drop_not_accepting, drop_invalid, resets_sent, resets_rate_limited,
                retries_sent, version_negotiations, migrations, stale_fd_notifications,
                stale_handle_calls, wrong_thread_calls, send_errors, conn_sockets_opened,
                conn_socket_fallbacks, fds_released, gso_sends, gro_batches, zero_rtt_accepted,
                conn_panics, packets_paced, sends_held,
            }),
            same_struct!(haquic_limits {
            struct_size,
            reserved,
            idle_timeout_ms,
            max_streams_bidi,
            max_streams_uni,
            initial_max_data,
            initial_max_stream_data_bidi_local,
            initial_max_stream_data_bidi_remote,
            initial_max_stream_data_uni,
            max_field_section_size,
            max_udp_payload_size,
        }),
        ];
        assert_eq!(
            offset_of!(haquic_stats, sends_held) + 8,
            size_of::<haquic_stats>(),
            "haquic_stats has fields after sends_held that this test does not check"
        );
        assert_eq!(
            (offset_of!(haquic_event, fd_generation) + 4).next_multiple_of(align_of::<haquic_event>()),
            size_of::<haquic_event>(),
            "haquic_event layout changed: check its fields here"
        );
        // Every field the header declares must be one we checked: compare
        // the field count through the struct's size, which the offsets of
        // the last field and its type determine.
        assert_eq!(
            offset_of!(haquic_limits, max_udp_payload_size) + 8,
            size_of::<haquic_limits>(),
            "haquic_limits has fields after max_udp_payload_size that this test does not check"
        );
        assert_eq!(declared("struct"), sorted(&checked), "structs declared in the header vs checked here");
    }

    #[test]
    fn result_enum_matches() {
        let mut names = Vec::new();
        for code in haquic_result::ALL {
            let name = format!("{code:?}");
            let c_value = c_result_value(&name).unwrap_or_else(|| panic!("{name} missing from the header"));
            assert_eq!(c_value, code as i64, "value of {name}");
            names.push(name);
        }
        assert_eq!(size_of::<c::haquic_result::Type>(), size_of::<haquic_result>());
        // No code in the header that Rust does not have.
        let declared_codes = GENERATED_ENUM_VARIANTS.with(|v| v.clone());
        assert_eq!(declared_codes, sorted(&names.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_eq!(
            declared("enum"),
            vec!["haquic_event_type".to_string(), "haquic_result".to_string()],
            "enums declared in the header"
        );
    }

    #[test]
    fn event_type_enum_matches() {
        use haquic_event_type::*;
        let all = [
            (HAQUIC_EVENT_NONE, c::haquic_event_type::HAQUIC_EVENT_NONE),
            (HAQUIC_EVENT_CONN_ESTABLISHED, c::haquic_event_type::HAQUIC_EVENT_CONN_ESTABLISHED),
            (HAQUIC_EVENT_REQUEST, c::haquic_event_type::HAQUIC_EVENT_REQUEST),
            (HAQUIC_EVENT_RESPONSE, c::haquic_event_type::HAQUIC_EVENT_RESPONSE),
            (HAQUIC_EVENT_TRAILERS, c::haquic_event_type::HAQUIC_EVENT_TRAILERS),
            (HAQUIC_EVENT_STREAM_READABLE, c::haquic_event_type::HAQUIC_EVENT_STREAM_READABLE),
            (HAQUIC_EVENT_STREAM_WRITABLE, c::haquic_event_type::HAQUIC_EVENT_STREAM_WRITABLE),
            (HAQUIC_EVENT_STREAM_FINISHED, c::haquic_event_type::HAQUIC_EVENT_STREAM_FINISHED),
            (HAQUIC_EVENT_STREAM_RESET, c::haquic_event_type::HAQUIC_EVENT_STREAM_RESET),
            (HAQUIC_EVENT_STOP_SENDING, c::haquic_event_type::HAQUIC_EVENT_STOP_SENDING),
            (HAQUIC_EVENT_GOAWAY, c::haquic_event_type::HAQUIC_EVENT_GOAWAY),
            (HAQUIC_EVENT_CONN_CLOSED, c::haquic_event_type::HAQUIC_EVENT_CONN_CLOSED),
            (HAQUIC_EVENT_FD_REGISTER, c::haquic_event_type::HAQUIC_EVENT_FD_REGISTER),
            (HAQUIC_EVENT_FD_RELEASE, c::haquic_event_type::HAQUIC_EVENT_FD_RELEASE),
        ];
        for (i, (rust, cval)) in all.iter().enumerate() {
            assert_eq!(*rust as i64, *cval as i64, "{rust:?}");
            assert_eq!(*rust as usize, i, "{rust:?} out of order");
        }
        let b = include_str!(concat!(env!("OUT_DIR"), "/abi_bindings.rs"));
        let m = b.find("pub mod haquic_event_type").expect("haquic_event_type in bindings");
        let end = m + b[m..].find("\n}").unwrap();
        let declared = b[m..end].lines().filter(|l| l.trim().starts_with("pub const ")).count();
        assert_eq!(declared, all.len(), "event types in the header vs checked here");
    }

    #[test]
    fn constants_match() {
        use haquic::ffi::version::*;
        assert_eq!(c::HAQUIC_VERSION_MAJOR, HAQUIC_VERSION_MAJOR);
        assert_eq!(c::HAQUIC_VERSION_MINOR, HAQUIC_VERSION_MINOR);
        assert_eq!(c::HAQUIC_VERSION_PATCH, HAQUIC_VERSION_PATCH);
        assert_eq!(c::HAQUIC_ALPN_WIRE_MAX, HAQUIC_ALPN_WIRE_MAX);
        assert_eq!(c::HAQUIC_LISTENER_HOST_FED, haquic::ffi::engine::HAQUIC_LISTENER_HOST_FED);
        assert_eq!(c::HAQUIC_LISTENER_CONN_SOCKETS, haquic::ffi::engine::HAQUIC_LISTENER_CONN_SOCKETS);
    }

    fn c_result_value(name: &str) -> Option<i64> {
        macro_rules! lookup {
            ($($v:ident),*) => {
                match name { $(stringify!($v) => Some(c::haquic_result::$v as i64),)* _ => None }
            };
        }
        lookup!(
            HAQUIC_OK, HAQUIC_ERR_NULL, HAQUIC_ERR_PANIC, HAQUIC_ERR_INVALID_ARGUMENT,
            HAQUIC_ERR_NOT_UTF8, HAQUIC_ERR_FILE_NOT_FOUND, HAQUIC_ERR_FILE_UNREADABLE,
            HAQUIC_ERR_BAD_CERTIFICATE, HAQUIC_ERR_BAD_PRIVATE_KEY, HAQUIC_ERR_KEY_MISMATCH,
            HAQUIC_ERR_BAD_ALPN, HAQUIC_ERR_OUT_OF_RANGE, HAQUIC_ERR_UNKNOWN_CC_ALGORITHM,
            HAQUIC_ERR_STRUCT_SIZE, HAQUIC_ERR_INCOMPLETE_CONFIG, HAQUIC_ERR_TLS,
            HAQUIC_ERR_CLOSED, HAQUIC_ERR_WRONG_THREAD, HAQUIC_ERR_BUFFER_TOO_SMALL,
            HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_QUEUE_FULL, HAQUIC_ERR_PROTOCOL, HAQUIC_ERR_IO,
            HAQUIC_ERR_LIMIT, HAQUIC_ERR_INVALID_STATE
        )
    }

    thread_local! {
        /// The variant names bindgen saw, read from the generated bindings.
        static GENERATED_ENUM_VARIANTS: Vec<String> = {
            let b = include_str!(concat!(env!("OUT_DIR"), "/abi_bindings.rs"));
            let m = b.find("pub mod haquic_result").expect("haquic_result module in bindings");
            let end = m + b[m..].find("\n}").unwrap();
            let mut v: Vec<String> = b[m..end]
                .lines()
                .filter_map(|l| l.trim().strip_prefix("pub const "))
                .map(|l| l.split(':').next().unwrap().trim().to_string())
                .collect();
            v.sort();
            v
        };
    }

    /// The names of `struct X {` / `enum X {` definitions in the header.
    fn declared(kind: &str) -> Vec<String> {
        let prefix = format!("typedef {kind} ");
        let mut v: Vec<String> = super::GENERATED
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|l| l.trim_end().ends_with('{'))
            .map(|l| l.trim_end_matches('{').trim().to_string())
            .collect();
        v.sort();
        v
    }

    fn sorted(v: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }
}
