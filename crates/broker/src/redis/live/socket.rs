//! Opening a pub/sub connection: TCP, TLS for `rediss://`, then `AUTH`.
//!
//! herald reads pub/sub itself (see `frames.rs`) instead of through the
//! `redis` crate, so it connects itself too, with the same address,
//! credentials and certificate roots as the crate's command connections.

use std::{
    io,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
};

use bytes::BytesMut;
use redis::{ConnectionAddr, ConnectionInfo};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::frames::{self, Frame};

/// A connected pub/sub socket, plain or TLS.
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The system's root certificates, loaded once.
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot use is skipped, as the crate does.
        let _ = roots.add(cert);
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
});

/// Connects to the server of `info` and authenticates.
pub(crate) async fn connect(info: &ConnectionInfo) -> io::Result<Socket> {
    let mut socket = match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let tcp = TcpStream::connect((host.as_str(), *port)).await?;
            tcp.set_nodelay(true)?;
            Socket::Plain(tcp)
        }
        ConnectionAddr::TcpTls { host, port, .. } => {
            let tcp = TcpStream::connect((host.as_str(), *port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = TlsConnector::from(Arc::clone(&TLS))
                .connect(name, tcp)
                .await?;
            Socket::Tls(Box::new(tls))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only TCP and TLS addresses are supported",
            ))
        }
    };
    let settings = info.redis_settings();
    if let Some(password) = settings.password() {
        let mut command = Vec::new();
        match settings.username() {
            Some(user) => frames::encode(
                &mut command,
                &[b"AUTH", user.as_bytes(), password.as_bytes()],
            ),
            None => frames::encode(&mut command, &[b"AUTH", password.as_bytes()]),
        }
        socket.write_all(&command).await?;
        let mut buffer = BytesMut::with_capacity(256);
        loop {
            match frames::next(&mut buffer).map_err(io::Error::other)? {
                Some(Frame::Ok) => break,
                Some(Frame::Error(message)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("AUTH: {message}"),
                    ))
                }
                Some(_) => return Err(io::Error::other("unexpected answer to AUTH")),
                None => {
                    if socket.read_buf(&mut buffer).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
    }
    Ok(socket)
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
