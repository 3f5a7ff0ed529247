//! Test-only entry points, compiled with the `test-hooks` feature and never in
//! a release or installed library. They exist to prove properties from C, such
//! as the panic boundary.

use super::ffi_panic_boundary;
use crate::error::haquic_result;

/// Panics inside the panic boundary. Returns `HAQUIC_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_test_panic() -> haquic_result {
    ffi_panic_boundary! {
        if std::hint::black_box(true) {
            panic!("haquic test hook: deliberate panic");
        }
        haquic_result::HAQUIC_OK
    }
}

/// Makes the next configuration update on the calling thread panic while it
/// holds the configuration's lock, which poisons that configuration.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_test_inject_config_panic() {
    ffi_panic_boundary! {
        crate::engine::config::inject_panic_in_next_update()
    }
}

/// Client role, test only: sends STOP_SENDING (`stop` true) or RESET_STREAM
/// (`stop` false) with `code` as the very first frame of the new
/// client-initiated bidirectional stream `stream_id`, without any HEADERS:
/// what a hostile or broken client does (HAProxy 3.0.2's `h3_close` crash
/// followed from it). Use stream ids the HTTP/3 layer will not reuse (high
/// ones, or a connection dedicated to this).
#[unsafe(no_mangle)]
pub extern "C" fn haquic_test_raw_stream_abort(
    conn: *const super::conn::haquic_conn,
    stream_id: u64,
    stop: bool,
    code: u64,
) -> haquic_result {
    ffi_panic_boundary! {
        let c = super::try_ref!(conn);
        let Some(engine) = c.engine.upgrade() else { return haquic_result::HAQUIC_ERR_CLOSED };
        let how = if stop { quiche::Shutdown::Read } else { quiche::Shutdown::Write };
        super::to_code(engine.with_conn(c, |conn, _| {
            // Open the stream locally without sending anything on it.
            let _ = conn.q.stream_send(stream_id, b"", false);
            conn.q.stream_shutdown(stream_id, how, code).map_err(|e| {
                crate::error::Error::new(haquic_result::HAQUIC_ERR_PROTOCOL, format!("stream_shutdown: {e}"))
            })
        }))
    }
}

/// Makes the next pass over `conn` panic inside its worker, as a bug in
/// quiche would: the connection must be dropped alone (Closed event with
/// INTERNAL_ERROR, `conn_panics` counted) while its worker carries on.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_test_conn_panic(conn: *const super::conn::haquic_conn) -> haquic_result {
    ffi_panic_boundary! {
        let c = super::try_ref!(conn);
        let Some(engine) = c.engine.upgrade() else { return haquic_result::HAQUIC_ERR_CLOSED };
        super::to_code(engine.with_conn(c, |conn, _| {
            conn.panic_next_flush = true;
            Ok(())
        }))
    }
}

/// Turns GSO off for the rest of the process, as on a kernel that refuses
/// UDP_SEGMENT: datagrams are then sent one by one.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_test_disable_gso() {
    ffi_panic_boundary! {
        crate::io::disable_gso()
    }
}
