//! A subscribe hook the test owns ([`HookServer`]), and the small HTTP/1.1
//! server under it and under [`crate::JwksServer`].
//!
//! herald calls the application's hook (`auth.subscribe_hook_url`) to ask
//! whether a subscriber may open topics nothing else grants. The test's
//! hook records every request exactly as it arrived (method, path, headers,
//! JSON body) and answers as the test says, which it may change mid-test:
//! allow (optionally bounding the stream's life), any status, or allow
//! after a delay longer than herald's timeout.
//!
//! The server is hand-rolled over a tokio TCP listener rather than a web
//! framework: what herald sends must be seen unchanged, and a test must be
//! able to close the port and open it again. It reads a request head,
//! a body framed by `Content-Length` or chunked, answers with
//! `Content-Length`, and keeps the connection for the next request unless
//! the client asked to close it. It runs on a runtime of its own, so a test
//! blocked in synchronous work (signing tokens with `openssl`) never makes
//! herald's call to it time out.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener as StdTcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};

/// The largest request head or body the server reads; anything larger
/// closes the connection. herald's requests are a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// How the test's hook answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookBehavior {
    /// `200` with `{"expires_in": n}` when `expires_in` is given (herald
    /// closes the stream after `n` seconds), else `200 {}`.
    Allow {
        /// The stream's life in seconds, if bounded.
        expires_in: Option<u64>,
    },
    /// This status with a small JSON body: `401`/`403` deny, anything else
    /// (`500`, `302`, …) is an error herald must not treat as an answer.
    Status(u16),
    /// Waits this long, then allows (`200 {}`): longer than
    /// `auth.subscribe_hook_timeout`, it is a hook that does not answer.
    Delay(Duration),
}

impl HookBehavior {
    /// Allows with no bound on the stream's life.
    pub fn allow() -> Self {
        Self::Allow { expires_in: None }
    }
}

/// One request the hook received.
#[derive(Debug, Clone, PartialEq)]
pub struct HookRequest {
    /// The method, such as `POST`.
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Headers by lowercase name; a repeated header's values are joined
    /// with `", "`, as HTTP allows.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, `Value::Null` when it is not JSON.
    pub body: Value,
}

impl HookRequest {
    /// A header's value, by any spelling of its name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `topics` array of the body.
    ///
    /// # Panics
    ///
    /// When the body is not `{"topics": [strings…]}`.
    pub fn topics(&self) -> Vec<String> {
        self.body["topics"]
            .as_array()
            .and_then(|topics| {
                topics
                    .iter()
                    .map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_else(|| panic!("the hook's body has no topics array: {}", self.body))
    }
}

#[derive(Debug)]
struct HookState {
    behavior: HookBehavior,
    requests: Vec<HookRequest>,
}

/// A running subscribe hook on a free loopback port; stops when dropped.
#[derive(Debug)]
pub struct HookServer {
    server: HttpServer,
    state: Arc<Mutex<HookState>>,
}

impl HookServer {
    /// The path herald is told to call ([`HookServer::url`]).
    pub const PATH: &'static str = "/subscribe-hook";

    /// Starts a hook answering as `behavior`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start(behavior: HookBehavior) -> Self {
        let state = Arc::new(Mutex::new(HookState {
            behavior,
            requests: Vec::new(),
        }));
        let handler_state = Arc::clone(&state);
        let server = HttpServer::new(0, move |request: &Request| {
            let mut state = handler_state.lock().expect("never poisoned");
            state.requests.push(HookRequest {
                method: request.method.clone(),
                path: request.path.clone(),
                headers: request.headers.clone(),
                body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
            });
            answer(state.behavior)
        });
        server.listen();
        Self { server, state }
    }

    /// The URL to configure as `auth.subscribe_hook_url`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.server.addr(), Self::PATH)
    }

    /// How it answers from now on (requests already waiting in a
    /// [`HookBehavior::Delay`] keep theirs).
    pub fn set_behavior(&self, behavior: HookBehavior) {
        self.state.lock().expect("never poisoned").behavior = behavior;
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<HookRequest> {
        self.state.lock().expect("never poisoned").requests.clone()
    }

    /// How many requests it has received.
    pub fn calls(&self) -> usize {
        self.state.lock().expect("never poisoned").requests.len()
    }

    /// The newest request.
    ///
    /// # Panics
    ///
    /// When none has arrived.
    pub fn last_request(&self) -> HookRequest {
        self.state
            .lock()
            .expect("never poisoned")
            .requests
            .last()
            .cloned()
            .expect("the hook has received no request")
    }

    /// Closes the port and every connection: herald's calls are refused,
    /// as when the application is down.
    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

fn answer(behavior: HookBehavior) -> Response {
    match behavior {
        HookBehavior::Allow { expires_in } => {
            let body = match expires_in {
                Some(seconds) => json!({ "expires_in": seconds }),
                None => json!({}),
            };
            Response::json(200, &body)
        }
        HookBehavior::Status(status) => Response::json(
            status,
            &json!({ "error": format!("the test's hook answers {status}") }),
        ),
        HookBehavior::Delay(delay) => Response {
            delay,
            ..Response::json(200, &json!({}))
        },
    }
}

// ---- the HTTP/1.1 server ----------------------------------------------------

/// A request as the server parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
    /// Whether the connection ends after the answer: `Connection: close`,
    /// or HTTP/1.0 without `Connection: keep-alive`.
    close: bool,
}

/// An answer, written after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    pub(crate) delay: Duration,
}

impl Response {
    /// `status` with `body` as `application/json`.
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    fn encode(&self, close: bool) -> Vec<u8> {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Status");
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// An HTTP/1.1 server on a fixed loopback port that can stop listening and
/// listen again on the same port. Every request goes to one handler.
pub(crate) struct HttpServer {
    addr: SocketAddr,
    handler: Handler,
    // Its own runtime; `None` only while dropping.
    runtime: Option<Runtime>,
    // While listening: the accept loop, which owns the connections, and
    // what tells it to stop.
    accept: Mutex<Option<(JoinHandle<()>, oneshot::Sender<()>)>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("listening", &self.is_listening())
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// A server for `port` on 127.0.0.1, not listening yet. Port `0` is
    /// bound at once to learn a free port, and then kept.
    ///
    /// # Panics
    ///
    /// When port `0` cannot be bound, or the runtime cannot start.
    pub(crate) fn new(
        port: u16,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testkit-http")
            .enable_all()
            .build()
            .expect("starting a runtime for a test HTTP server");
        let listener = (port == 0)
            .then(|| StdTcpListener::bind("127.0.0.1:0").expect("binding a loopback port"));
        let addr = match &listener {
            Some(listener) => listener.local_addr().expect("a bound address"),
            None => SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let server = Self {
            addr,
            handler: Arc::new(handler),
            runtime: Some(runtime),
            accept: Mutex::new(None),
        };
        if let Some(listener) = listener {
            server.serve(listener);
        }
        server
    }

    /// The address it listens on (or will).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it accepts connections now.
    pub(crate) fn is_listening(&self) -> bool {
        self.accept.lock().expect("never poisoned").is_some()
    }

    /// Listens on its port, if it does not already.
    ///
    /// # Panics
    ///
    /// When the port is taken.
    pub(crate) fn listen(&self) {
        if self.is_listening() {
            return;
        }
        // std sets SO_REUSEADDR, so connections of an earlier listener in
        // TIME_WAIT do not block the port.
        let listener = StdTcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("binding {} for a test HTTP server: {e}", self.addr));
        self.serve(listener);
    }

    fn serve(&self, listener: StdTcpListener) {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let runtime = self.runtime.as_ref().expect("running");
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).expect("registering the listener")
        };
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(accept_loop(listener, Arc::clone(&self.handler), stopped));
        *self.accept.lock().expect("never poisoned") = Some((task, stop));
    }

    /// Stops listening and closes every connection; returns once both are
    /// closed, so the next connection attempt is refused.
    pub(crate) async fn stop(&self) {
        let running = self.accept.lock().expect("never poisoned").take();
        if let Some((task, stop)) = running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Not `drop`: a runtime cannot be dropped inside the test's own.
            runtime.shutdown_background();
        }
    }
}

/// Accepts connections until told to stop (or the server is gone), then
/// closes the port and every connection before returning.
async fn accept_loop(listener: TcpListener, handler: Handler, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                if let Ok((socket, _)) = accepted {
                    connections.spawn(serve_connection(socket, Arc::clone(&handler)));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(mut socket: TcpStream, handler: Handler) {
    let _ = socket.set_nodelay(true);
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buffer).await {
        let response = handler(&request);
        if !response.delay.is_zero() {
            tokio::time::sleep(response.delay).await;
        }
        if socket
            .write_all(&response.encode(request.close))
            .await
            .is_err()
            || request.close
        {
            return;
        }
    }
}

/// Reads the next request from `socket`, keeping bytes after it in
/// `buffer`. `None` when the connection ends, or the request is malformed
/// or too large (the connection is then closed without an answer).
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end;
        }
        fill(socket, buffer).await?;
    };
    let head = buffer.drain(..head_end + 4).collect::<Vec<u8>>();
    let (method, path, http10, headers) = parse_head(&head[..head_end])?;
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        read_chunked(socket, buffer).await?
    } else {
        let length: usize = match headers.get("content-length") {
            Some(value) => value.trim().parse().ok()?,
            None => 0,
        };
        if length > MAX_REQUEST_BYTES {
            return None;
        }
        while buffer.len() < length {
            fill(socket, buffer).await?;
        }
        buffer.drain(..length).collect()
    };
    let connection = headers
        .get("connection")
        .map(|v| v.to_ascii_lowercase())
        .unwrap_or_default();
    let close = connection.contains("close") || (http10 && !connection.contains("keep-alive"));
    Some(Request {
        method,
        path,
        headers,
        body,
        close,
    })
}

/// Reads more bytes into `buffer`; `None` at the end of the connection or
/// past [`MAX_REQUEST_BYTES`].
async fn fill(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    if buffer.len() > MAX_REQUEST_BYTES {
        return None;
    }
    let mut chunk = [0u8; 8192];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// A chunked body (RFC 9112 §7.1): hex sizes (extensions ignored), each
/// chunk followed by CRLF, a zero size, then trailer lines up to an empty
/// one.
async fn read_chunked(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(socket, buffer).await?;
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = usize::from_str_radix(std::str::from_utf8(size).ok()?.trim(), 16).ok()?;
        if size == 0 {
            while !read_line(socket, buffer).await?.is_empty() {}
            return Some(body);
        }
        if body.len() + size > MAX_REQUEST_BYTES {
            return None;
        }
        while buffer.len() < size + 2 {
            fill(socket, buffer).await?;
        }
        body.extend(buffer.drain(..size));
        if buffer.drain(..2).as_slice() != b"\r\n" {
            return None;
        }
    }
}

/// One CRLF-terminated line, without the CRLF.
async fn read_line(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = find(buffer, b"\r\n") {
            let line = buffer.drain(..end + 2).take(end).collect();
            return Some(line);
        }
        fill(socket, buffer).await?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The request line and headers: method, target, whether it is HTTP/1.0,
/// headers by lowercase name (repeated ones joined with `", "`).
fn parse_head(head: &[u8]) -> Option<(String, String, bool, BTreeMap<String, String>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next().filter(|m| !m.is_empty())?.to_owned();
    let path = request_line.next().filter(|p| !p.is_empty())?.to_owned();
    let http10 = match request_line.next()? {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return None,
    };
    let mut headers = BTreeMap::<String, String>::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.to_ascii_lowercase();
        let value = value.trim_matches([' ', '\t']);
        headers
            .entry(name)
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    Some((method, path, http10, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_lowercase_headers_with_repeats_joined() {
        let head = b"POST /hook?x=1 HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nX-Forwarded-For:  1.2.3.4 \r\ncookie: b=2";
        let (method, path, http10, headers) = parse_head(head).expect("a valid head");
        assert_eq!(
            (method.as_str(), path.as_str(), http10),
            ("POST", "/hook?x=1", false)
        );
        assert_eq!(headers["cookie"], "a=1, b=2");
        assert_eq!(headers["x-forwarded-for"], "1.2.3.4");
        assert_eq!(headers["host"], "a");
        assert!(parse_head(b"GET / HTTP/2\r\n").is_none());
        assert!(parse_head(b"GET /\r\n").is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nno colon").is_none());
    }

    #[test]
    fn responses_carry_their_length_and_close_when_asked() {
        let response = Response::json(403, &json!({"a": 1}));
        assert_eq!(
            String::from_utf8(response.encode(true)).unwrap(),
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\
             Connection: close\r\n\r\n{\"a\":1}"
        );
        let kept = String::from_utf8(Response::json(599, &json!({})).encode(false)).unwrap();
        assert!(kept.starts_with("HTTP/1.1 599 Status\r\n"), "{kept}");
        assert!(!kept.contains("Connection"), "{kept}");
    }

    /// Sends `bytes` to `server` over one connection and reads until the
    /// server closes it.
    async fn exchange(server: &HttpServer, bytes: &[u8]) -> String {
        let mut socket = TcpStream::connect(server.addr()).await.expect("connecting");
        socket.write_all(bytes).await.expect("sending");
        let mut answer = Vec::new();
        tokio::time::timeout(crate::TIMEOUT, socket.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .expect("reading");
        String::from_utf8(answer).expect("ASCII answers")
    }

    #[tokio::test]
    async fn the_hook_records_pipelined_and_chunked_requests_and_answers_each() {
        let hook = HookServer::start(HookBehavior::Allow {
            expires_in: Some(5),
        });
        let body = r#"{"topics":["a","b"]}"#;
        let request = format!(
            "POST /subscribe-hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nCookie: s=1\r\n\r\n{body}\
             POST /subscribe-hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n5\r\n{{\"top\r\n10;ext=1\r\nics\":[\"c\"]}}     \r\n0\r\n\r\n",
            body.len()
        );
        let answer = exchange(&hook.server, request.as_bytes()).await;
        assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
        assert!(
            answer.ends_with("Connection: close\r\n\r\n{\"expires_in\":5}"),
            "{answer}"
        );
        let requests = hook.requests();
        assert_eq!(hook.calls(), 2);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/subscribe-hook");
        assert_eq!(requests[0].header("Cookie"), Some("s=1"));
        assert_eq!(requests[0].topics(), ["a", "b"]);
        assert_eq!(requests[1].topics(), ["c"]);
        assert!(hook.url().ends_with("/subscribe-hook"));
    }

    #[tokio::test]
    async fn the_hook_answers_as_told_and_refuses_connections_once_stopped() {
        let hook = HookServer::start(HookBehavior::Status(403));
        let client = reqwest::Client::new();
        let status = |reply: reqwest::Response| reply.status().as_u16();
        let post = || client.post(hook.url()).body("not json").send();
        assert_eq!(status(post().await.expect("an answer")), 403);
        assert_eq!(hook.last_request().body, Value::Null);
        hook.set_behavior(HookBehavior::Status(500));
        assert_eq!(status(post().await.expect("an answer")), 500);
        hook.set_behavior(HookBehavior::Delay(Duration::from_millis(300)));
        let started = std::time::Instant::now();
        assert_eq!(status(post().await.expect("an answer")), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // The client's pooled keep-alive connection is closed too.
        hook.stop().await;
        assert!(post().await.is_err(), "a stopped hook still answers");
        assert_eq!(hook.calls(), 3);
    }
}
