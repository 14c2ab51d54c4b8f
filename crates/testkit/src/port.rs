//! Free TCP ports for processes that cannot bind port 0 themselves and
//! report back (`redis-server`).

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago (never 6379).
///
/// Another process may take it between this call and its use; callers that
/// start a server on it retry with a new port when the bind fails.
///
/// # Panics
///
/// When no port can be bound on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if port != 6379 {
            return port;
        }
    }
}
