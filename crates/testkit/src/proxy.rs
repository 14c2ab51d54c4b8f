//! A TCP proxy the test owns, to break a link between two real processes
//! without touching either: herald ↔ Redis, or clients ↔ herald.
//!
//! Point one side at [`Proxy::addr`] and the proxy at the other
//! ([`Proxy::set_upstream`], which may change while it runs, e.g. to a node
//! restarted on another port). Then [`Proxy::cut`] closes every connection
//! through it and refuses new ones, as a crashed peer or a firewall reset
//! would; [`Proxy::stall`] keeps connections open but stops moving bytes
//! either way, as a network partition does (peers only notice through their
//! own timeouts); [`Proxy::restore`] heals both.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Forwards both ways.
    Open,
    /// Closes every connection and refuses new ones.
    Cut,
    /// Keeps connections but forwards nothing (new ones are accepted and
    /// stall too).
    Stalled,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    state: watch::Sender<LinkState>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port for a proxy");
        let addr = listener.local_addr().expect("a bound address");
        let upstream = Arc::new(Mutex::new(upstream));
        let (state, watcher) = watch::channel(LinkState::Open);
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&upstream), watcher));
        Self {
            addr,
            upstream,
            state,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for a proxy in front of a herald node.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `redis://<addr>`, for a proxy in front of Redis.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Forwards new connections to `upstream` from now on (open ones keep
    /// their peer).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("not poisoned") = upstream;
    }

    /// Closes every connection and refuses new ones until
    /// [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.send_replace(LinkState::Cut);
    }

    /// Stops moving bytes, keeping connections open, until
    /// [`Proxy::restore`].
    pub fn stall(&self) {
        self.state.send_replace(LinkState::Stalled);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.state.send_replace(LinkState::Open);
    }

    /// What it does now.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Open connections see the state channel close and end.
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<Mutex<SocketAddr>>,
    state: watch::Receiver<LinkState>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *state.borrow() == LinkState::Cut {
            drop(client);
            continue;
        }
        let target = *upstream.lock().expect("not poisoned");
        tokio::spawn(relay(client, target, state.clone()));
    }
}

/// Moves bytes both ways between `client` and `target` while the state
/// allows, until either side closes or the link is cut.
async fn relay(client: TcpStream, target: SocketAddr, mut state: watch::Receiver<LinkState>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    loop {
        let current = *state.borrow_and_update();
        match current {
            LinkState::Cut => return,
            LinkState::Stalled => {
                if state.changed().await.is_err() {
                    return;
                }
                continue;
            }
            LinkState::Open => {}
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::TIMEOUT;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut answer = vec![0u8; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn forwards_cuts_stalls_and_restores() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream).await.unwrap(), b"ping");

        proxy.stall();
        stream.write_all(b"ping").await.unwrap();
        let mut answer = vec![0u8; 4];
        let stalled = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            stream.read_exact(&mut answer),
        )
        .await;
        assert!(stalled.is_err(), "nothing moves while stalled");
        proxy.restore();
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, b"ping");

        proxy.cut();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a cut closes open connections");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut refused).await.is_err(),
            "and refuses new ones"
        );
        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again).await.unwrap(), b"ping");
    }
}
