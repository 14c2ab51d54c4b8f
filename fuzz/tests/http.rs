//! Raw bytes at a live node: garbage request lines, hostile heads, huge and
//! many headers, non-UTF-8 `Last-Event-ID`, NUL in the query, bodies that
//! lie about their length, all split into packets at random places. Herald
//! never answers `5xx`, never panics, and serves the next request.
//!
//! Each case is a TCP connection, so this target has its own case count:
//! `HTTP_FUZZ_CASES` (default 160).

use std::time::Duration;

use herald_fuzz::{cases_from_env, config, mutated, seeds, JWT_SECRET, PUBLISH_KEY};
use herald_testkit::Node;
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Cases when `HTTP_FUZZ_CASES` is not set.
const DEFAULT_HTTP_CASES: u32 = 160;
/// How long one case waits for a response head. Herald gives clients 5 s
/// to send a head; every case ends its request (or closes its side), so an
/// answer comes long before that.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `parts` in separate writes, closes the sending side, and returns
/// the status of the response head, if one arrives.
async fn exchange(node: &Node, parts: &[Vec<u8>]) -> Result<Option<u16>, String> {
    let mut socket = TcpStream::connect(node.addr())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    for part in parts {
        // The node may answer and close before it has read everything
        // (a 413, a malformed head): a failed write is an answer too.
        if socket.write_all(part).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let _ = socket.shutdown().await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        loop {
            if received.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() && received.is_empty() {
        // Holding a connection it has nothing to say on yet (a stream
        // whose head is still incomplete) is allowed; it is bounded by
        // herald's head timeout, checked in tests/tests/hostile.rs.
        return Ok(None);
    }
    if received.is_empty() {
        return Ok(None);
    }
    let line = received.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    Ok(Some(status))
}

/// Splits `bytes` at `cuts` into packets.
fn packets(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        if cut > start {
            out.push(bytes[start..cut].to_vec());
            start = cut;
        }
    }
    out
}

/// A request assembled from hostile parts.
fn structured_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        4 => Just(b"GET".to_vec()),
        2 => Just(b"POST".to_vec()),
        1 => proptest::sample::select(vec![
            b"OPTIONS".to_vec(), b"HEAD".to_vec(), b"PUT".to_vec(), b"get".to_vec(),
            b"G\0T".to_vec(), b"".to_vec(), vec![0xff; 3],
        ]),
    ];
    let path = prop_oneof![
        3 => Just(b"/v1/events?".to_vec()),
        2 => Just(b"/v1/publish".to_vec()),
        1 => Just(b"/v1/publish/batch".to_vec()),
        1 => Just(b"/v1/topics/".to_vec()),
        1 => Just(b"/healthz".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ];
    let query = proptest::collection::vec(
        prop_oneof![
            Just(b"topic=public.a".to_vec()),
            Just(b"topic=private.a".to_vec()),
            Just(b"topic=a%00b".to_vec()),
            Just(b"topic=a\0b".to_vec()),
            Just(b"topic=%FF".to_vec()),
            Just(b"last_event_id=%C3%28".to_vec()),
            Just(b"access_token=x.y.z".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ],
        0..4,
    )
    .prop_map(|items| items.join(&b'&'));
    let version = prop_oneof![
        6 => Just(b"HTTP/1.1".to_vec()),
        1 => Just(b"HTTP/1.0".to_vec()),
        1 => Just(b"HTTP/9.9".to_vec()),
        1 => Just(b"".to_vec()),
    ];
    let header = prop_oneof![
        Just(b"Host: x".to_vec()),
        Just(b"Last-Event-ID: \xff\xfe\x80".to_vec()),
        Just(b"Last-Event-ID: AeQMKSwAxaGpAQ".to_vec()),
        Just(format!("Authorization: Bearer {PUBLISH_KEY}").into_bytes()),
        Just(b"Authorization: Bearer".to_vec()),
        Just(b"Authorization: bearer \xff".to_vec()),
        Just(b"Cookie: herald_token=\"\"; herald_token=x".to_vec()),
        Just(b"Origin: https://app.example".to_vec()),
        Just(b"Content-Type: application/json".to_vec()),
        Just(b"Content-Length: 5".to_vec()),
        Just(b"Content-Length: -1".to_vec()),
        Just(b"Content-Length: 99999999999999999999".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        Just(b"Expect: 100-continue".to_vec()),
        Just(b"Connection: upgrade\r\nUpgrade: websocket".to_vec()),
        Just(b"X-Folded: a\r\n b".to_vec()),
        Just(b"No-Colon".to_vec()),
        Just(b": empty-name".to_vec()),
        (1usize..80_000).prop_map(|n| [b"X-Big: ".as_slice(), &vec![b'a'; n]].concat()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    let headers = proptest::collection::vec(header, 0..8);
    let body = prop_oneof![
        Just(Vec::new()),
        Just(br#"{"topic":"public.a","data":"x\r\n\r\nevent: evil"}"#.to_vec()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (method, path, query, version, headers, body).prop_map(
        |(method, path, query, version, headers, body)| {
            let mut request = method;
            request.push(b' ');
            request.extend(path);
            request.extend(query);
            request.push(b' ');
            request.extend(version);
            request.extend(b"\r\n");
            for header in headers {
                request.extend(header);
                request.extend(b"\r\n");
            }
            request.extend(b"\r\n");
            request.extend(body);
            request
        },
    )
}

/// A well-formed request carrying one fuzzed part where a client puts its
/// data: a publish body, a query string, a cursor, a token, a topic path.
fn templated_request() -> impl Strategy<Value = Vec<u8>> {
    let head = |line: String, headers: &[String]| {
        let mut head = line.into_bytes();
        head.extend(b"\r\nHost: x\r\n");
        for header in headers {
            head.extend(header.as_bytes());
            head.extend(b"\r\n");
        }
        head
    };
    prop_oneof![
        mutated("publish").prop_map(move |body| {
            let mut request = head(
                "POST /v1/publish HTTP/1.1".into(),
                &[
                    format!("Authorization: Bearer {PUBLISH_KEY}"),
                    format!("Content-Length: {}", body.len()),
                ],
            );
            request.extend(b"\r\n");
            request.extend(body);
            request
        }),
        mutated("batch").prop_map(move |body| {
            let mut request = head(
                "POST /v1/publish/batch HTTP/1.1".into(),
                &[
                    format!("Authorization: Bearer {PUBLISH_KEY}"),
                    format!("Content-Length: {}", body.len()),
                ],
            );
            request.extend(b"\r\n");
            request.extend(body);
            request
        }),
        mutated("query").prop_map(move |query| {
            let mut request = b"GET /v1/events?".to_vec();
            request.extend(query);
            request.extend(b" HTTP/1.1\r\nHost: x\r\n\r\n");
            request
        }),
        (mutated("cursor"), mutated("token")).prop_map(move |(cursor, token)| {
            let mut request = head(
                "GET /v1/events?topic=public.a&topic=private.b HTTP/1.1".into(),
                &[],
            );
            for (name, value) in [
                (&b"Last-Event-ID: "[..], cursor),
                (b"Authorization: Bearer ", token),
            ] {
                request.extend(name);
                request.extend(value);
                request.extend(b"\r\n");
            }
            request.extend(b"\r\n");
            request
        }),
        mutated("cursor").prop_map(move |cursor| {
            let mut request = head("GET /v1/events?topic=public.a HTTP/1.1".into(), &[]);
            request.extend(b"Last-Event-ID: ");
            request.extend(cursor);
            request.extend(b"\r\n\r\n");
            request
        }),
        mutated("topic").prop_map(move |topic| {
            let mut request = b"GET /v1/topics/".to_vec();
            request.extend(topic);
            request.extend(b" HTTP/1.1\r\nHost: x\r\n\r\n");
            request
        }),
        Just(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ]
}

async fn assert_still_serving(node: &Node, after: &str) -> Result<(), TestCaseError> {
    match node.api().status_of("/healthz").await {
        Some(200) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "after {after}, GET /healthz answered {other:?}; log {}",
            node.log_path().display()
        ))),
    }
}

#[test]
fn hostile_bytes_never_get_a_5xx_nor_stop_the_node() {
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let node = runtime.block_on(
        Node::builder()
            .env("HERALD__AUTH__PUBLISH_KEYS", PUBLISH_KEY)
            .env("HERALD__AUTH__JWT_SECRET", JWT_SECRET)
            .env("HERALD__AUTH__PUBLIC_TOPICS", "public.*")
            .env("HERALD__CORS__ALLOWED_ORIGINS", "https://app.example")
            .start(),
    );
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<Option<u16>, u32>::new());
    let check = |parts: Vec<Vec<u8>>| -> Result<(), TestCaseError> {
        let shown = || {
            let all = parts.concat();
            let head = &all[..all.len().min(300)];
            format!(
                "{:?} in {} packets",
                String::from_utf8_lossy(head),
                parts.len()
            )
        };
        runtime.block_on(async {
            match exchange(&node, &parts).await {
                Ok(Some(status)) if status >= 500 => Err(TestCaseError::fail(format!(
                    "{} answered {status}",
                    shown()
                ))),
                Ok(status) => {
                    *seen
                        .lock()
                        .expect("not poisoned")
                        .entry(status)
                        .or_default() += 1;
                    assert_still_serving(&node, &shown()).await
                }
                Err(error) => Err(TestCaseError::fail(format!("{}: {error}", shown()))),
            }
        })
    };

    for seed in seeds("http") {
        check(vec![seed]).unwrap();
    }
    let inputs = (
        prop_oneof![mutated("http"), structured_request(), templated_request()],
        proptest::collection::vec(any::<usize>(), 0..4),
    );
    let cases = cases_from_env("HTTP_FUZZ_CASES", DEFAULT_HTTP_CASES);
    TestRunner::new(proptest::test_runner::Config {
        cases,
        // Shrinking replays against the live node; keep it short.
        max_shrink_iters: 200,
        ..config(file!())
    })
    .run(&inputs, |(bytes, cuts)| check(packets(&bytes, &cuts)))
    .unwrap();

    // The fuzzer must reach past the front door, or it tests nothing.
    let seen = seen.into_inner().expect("not poisoned");
    eprintln!("statuses (None: no answer before the connection ended): {seen:?}");
    for status in [200, 202, 400, 401, 404] {
        assert!(
            seen.contains_key(&Some(status)),
            "no {status} among {seen:?}"
        );
    }

    let log = node.log_text();
    assert!(
        !log.contains("panicked"),
        "herald panicked; log {}",
        node.log_path().display()
    );
    let own_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""level":"ERROR""#) && l.contains(r#""target":"herald"#))
        .collect();
    assert!(
        own_errors.is_empty(),
        "herald logged errors: {own_errors:#?}"
    );
}
