//! CORS for browser subscribers, exactly as docs/protocol.md §6 says: a listed
//! origin is echoed with credentials, `"*"` allows any origin without them,
//! an unlisted origin (or the default empty list) gets no CORS headers, and
//! preflight `OPTIONS` is answered. On streams opened on a new connection
//! (herald's own stream path), on reused connections and every other route
//! (actix), and on error answers alike.

use herald_testkit::{Api, Node, SseStream, TIMEOUT};
use reqwest::{header::HeaderMap, Client, Method, StatusCode};
use serde_json::json;

const APP: &str = "https://app.example";
const ADMIN: &str = "https://admin.example:8443";
const EVIL: &str = "https://evil.example";

/// One request as a browser would make it from `origin`.
struct Probe {
    what: &'static str,
    method: Method,
    path: &'static str,
    status: u16,
}

fn probes() -> Vec<Probe> {
    let probe = |what, method, path, status| Probe {
        what,
        method,
        path,
        status,
    };
    vec![
        probe("stream", Method::GET, "/v1/events?topic=t", 200),
        probe(
            "bad stream request",
            Method::GET,
            "/v1/events?topic=a%20b",
            400,
        ),
        probe("publish", Method::POST, "/v1/publish", 202),
        probe("bad publish", Method::POST, "/v1/publish/batch", 400),
        probe("topic info", Method::GET, "/v1/topics/t", 200),
        probe("health", Method::GET, "/healthz", 200),
        probe("unknown path", Method::GET, "/nope", 404),
        probe("wrong method", Method::PUT, "/v1/publish", 405),
    ]
}

/// The two kinds of connection a request can arrive on.
async fn clients(node: &Node) -> [(&'static str, Client); 2] {
    [
        (
            "a new connection",
            Api::without_keep_alive(node.url()).client().clone(),
        ),
        (
            "a reused connection",
            node.client_with_idle_connection().await,
        ),
    ]
}

/// Status and headers of `probe` sent with `Origin: origin` (none when
/// `None`). Stream bodies are not read; they never end.
async fn headers_of(
    node: &Node,
    client: &Client,
    probe: &Probe,
    origin: Option<&str>,
) -> HeaderMap {
    let mut request = client
        .request(
            probe.method.clone(),
            format!("{}{}", node.url(), probe.path),
        )
        .timeout(TIMEOUT);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if probe.method == Method::POST {
        let body = if probe.path.ends_with("batch") {
            json!({"messages": []})
        } else {
            json!({"topic": "t", "data": "x"})
        };
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", probe.what));
    assert_eq!(
        response.status(),
        StatusCode::from_u16(probe.status).expect("a status"),
        "{} from {origin:?}",
        probe.what
    );
    response.headers().clone()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn node_allowing(origins: &str) -> Node {
    Node::builder()
        .env("HERALD__CORS__ALLOWED_ORIGINS", origins)
        .start()
        .await
}

#[tokio::test]
async fn a_listed_origin_is_echoed_with_credentials_on_every_route_and_connection() {
    let node = node_allowing(&format!("{APP},{ADMIN}")).await;
    for (connection, client) in clients(&node).await {
        for probe in probes() {
            for origin in [APP, ADMIN] {
                let headers = headers_of(&node, &client, &probe, Some(origin)).await;
                let what = format!("{} from {origin} on {connection}", probe.what);
                assert_eq!(
                    header(&headers, "access-control-allow-origin"),
                    Some(origin),
                    "{what}"
                );
                assert_eq!(
                    header(&headers, "access-control-allow-credentials"),
                    Some("true"),
                    "{what}"
                );
                let vary: Vec<&str> = headers
                    .get_all("vary")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                assert!(
                    vary.iter()
                        .any(|v| v.to_ascii_lowercase().contains("origin")),
                    "{what}: Vary {vary:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn star_allows_any_origin_without_credentials() {
    let node = node_allowing("*").await;
    for (connection, client) in clients(&node).await {
        for probe in probes() {
            for origin in [APP, EVIL, "null"] {
                let headers = headers_of(&node, &client, &probe, Some(origin)).await;
                let what = format!("{} from {origin} on {connection}", probe.what);
                assert_eq!(
                    header(&headers, "access-control-allow-origin"),
                    Some("*"),
                    "{what}"
                );
                assert_eq!(
                    header(&headers, "access-control-allow-credentials"),
                    None,
                    "{what}"
                );
            }
        }
    }
}

#[tokio::test]
async fn unlisted_origins_and_the_default_empty_list_get_no_cors_headers() {
    let listed = node_allowing(APP).await;
    let default = Node::start().await;
    for (node, origins) in [
        (
            &listed,
            &[
                EVIL,
                "https://app.example.evil",
                "http://app.example",
                "https://APP.example",
            ][..],
        ),
        (&default, &[APP, EVIL][..]),
    ] {
        for (connection, client) in clients(node).await {
            for probe in probes() {
                for origin in origins.iter().copied().map(Some).chain([None]) {
                    let headers = headers_of(node, &client, &probe, origin).await;
                    for name in [
                        "access-control-allow-origin",
                        "access-control-allow-credentials",
                        "access-control-allow-methods",
                        "access-control-allow-headers",
                    ] {
                        assert_eq!(
                            header(&headers, name),
                            None,
                            "{} from {origin:?} on {connection}",
                            probe.what
                        );
                    }
                }
            }
        }
    }
}

async fn preflight(
    node: &Node,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> (u16, HeaderMap) {
    let mut request = node
        .api()
        .client()
        .request(Method::OPTIONS, format!("{}{path}", node.url()))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(headers) = headers {
        request = request.header("access-control-request-headers", headers);
    }
    let response = request.send().await.expect("a preflight answer");
    (response.status().as_u16(), response.headers().clone())
}

#[tokio::test]
async fn preflight_is_answered_for_listed_origins_and_gives_others_nothing() {
    let node = node_allowing(APP).await;
    for (path, method) in [("/v1/events?topic=t", "GET"), ("/v1/publish", "POST")] {
        let (status, headers) = preflight(
            &node,
            path,
            APP,
            method,
            Some("last-event-id, authorization"),
        )
        .await;
        assert!((200..300).contains(&status), "{path}: {status}");
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
        assert_eq!(
            header(&headers, "access-control-allow-credentials"),
            Some("true")
        );
        let methods = header(&headers, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains(method), "{path}: {methods}");
        let allowed = header(&headers, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for wanted in ["last-event-id", "authorization"] {
            assert!(allowed.contains(wanted), "{path}: {allowed}");
        }
        assert!(
            header(&headers, "access-control-max-age").is_some(),
            "{path}"
        );

        let (status, headers) = preflight(&node, path, EVIL, method, None).await;
        assert!(status < 500, "{path}: {status}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            None,
            "{path}"
        );
        assert_eq!(
            header(&headers, "access-control-allow-methods"),
            None,
            "{path}"
        );
    }
    // A preflight opens nothing and publishes nothing.
    assert_eq!(node.api().history_length("t").await, 0);
    let metrics = node.api().metrics().await;
    assert_eq!(metrics.value("herald_connections", &[]), Some(0.0));
}

#[tokio::test]
async fn the_stream_path_reads_the_origin_header_whatever_its_spelling() {
    let node = node_allowing(APP).await;
    for name in ["Origin", "origin", "ORIGIN", "oRiGiN"] {
        let request =
            format!("GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\n{name}: {APP}\r\n\r\n");
        let stream = SseStream::send_raw(node.addr(), &[request.as_bytes()]).await;
        assert_eq!(stream.status(), 200, "{name}");
        assert_eq!(
            stream.header("access-control-allow-origin"),
            Some(APP),
            "{name}"
        );
        assert_eq!(
            stream.header("access-control-allow-credentials"),
            Some("true"),
            "{name}"
        );
    }
    // An origin that only starts like a listed one is not listed.
    let request =
        format!("GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\nOrigin: {APP}.evil\r\n\r\n");
    let stream = SseStream::send_raw(node.addr(), &[request.as_bytes()]).await;
    assert_eq!(stream.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn an_origin_named_star_gets_the_wildcard_without_credentials() {
    let node = node_allowing("*").await;
    for (connection, client) in clients(&node).await {
        for probe in probes() {
            let headers = headers_of(&node, &client, &probe, Some("*")).await;
            let what = format!("{} on {connection}", probe.what);
            assert_eq!(
                header(&headers, "access-control-allow-origin"),
                Some("*"),
                "{what}"
            );
            assert_eq!(
                header(&headers, "access-control-allow-credentials"),
                None,
                "{what}"
            );
        }
    }
}
