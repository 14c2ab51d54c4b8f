//! Subscribe requests (`herald::subscribe::{parse, start}`: query string,
//! `Last-Event-ID`, `Authorization`, `Cookie`), topic and event names, and
//! cursors: no input panics, refusals are only `400`/`401`/`403`, and the
//! answer to a request built from known parts is the one docs/protocol.md
//! (sections 1 and 6) gives.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use herald::{
    error::ApiError,
    state::AppState,
    subscribe::{self, Opened, SubscribeHead},
};
use herald_broker::{cursor, Cursor, EventName, Position, Topic};
use herald_fuzz::{app_state, config, mutated, mutated_text, seeds, JWT_SECRET};
use jsonwebtoken::{EncodingKey, Header};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};
use serde_json::json;

/// A fuzzed node's state, inside the runtime its broker needs.
struct Node {
    runtime: tokio::runtime::Runtime,
    state: Arc<AppState>,
}

impl Node {
    /// What the node answers `head`: validated, authorized, and the stream
    /// opened (then dropped) on the embedded broker.
    fn subscribe(&self, head: &SubscribeHead<'_>) -> Result<Opened, ApiError> {
        let request = subscribe::parse(&self.state, head)?;
        self.runtime
            .block_on(subscribe::start(&self.state, request))
    }
}

/// Runs `f` with a fuzzed node.
fn with_state(f: impl FnOnce(&Node)) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let state = {
        let _entered = runtime.enter();
        app_state()
    };
    f(&Node { runtime, state });
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

/// The status a subscribe is answered with; only `200` (a stream), `400`,
/// `401` and `403` are allowed on the stream route.
fn status(outcome: Result<Opened, ApiError>) -> Result<u16, TestCaseError> {
    match outcome {
        Ok(Opened::Stream(_)) => Ok(200),
        Ok(Opened::Refused(_)) => Err(TestCaseError::fail(
            "a node with room and no hook refused a stream".to_owned(),
        )),
        Err(ApiError::BadRequest(_)) => Ok(400),
        Err(ApiError::Unauthorized(_)) => Ok(401),
        Err(ApiError::Forbidden(_)) => Ok(403),
        Err(other) => Err(TestCaseError::fail(format!(
            "subscribe refused with {other:?}; only 400, 401 and 403 are allowed"
        ))),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn token(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 tokens encode")
}

#[test]
fn mutated_subscribe_heads_never_panic_and_are_only_refused_with_400_401_403() {
    let inputs = (
        mutated_text("query"),
        proptest::option::of(mutated("cursor")),
        proptest::option::of(mutated("token")),
        proptest::option::of(mutated("token")),
    );
    with_state(|node| {
        TestRunner::new(config(file!()))
            .run(&inputs, |(query, last_event_id, authorization, cookie)| {
                let authorization = authorization.map(|t| [b"Bearer ".as_slice(), &t].concat());
                let cookie = cookie.map(|t| [b"herald_token=".as_slice(), &t].concat());
                let head = SubscribeHead {
                    query: &query,
                    last_event_id: last_event_id.as_deref(),
                    authorization: authorization.as_deref(),
                    cookie: cookie.as_deref(),
                    ..SubscribeHead::default()
                };
                status(node.subscribe(&head)).map(|_| ())
            })
            .unwrap();
    });
}

/// Where a subscriber token travels.
#[derive(Debug, Clone, Copy)]
enum Place {
    Header,
    Cookie,
    Query,
}

/// What token a generated request carries.
#[derive(Debug, Clone)]
enum Credential {
    None,
    /// Valid, covering these patterns.
    Valid(Vec<String>),
    /// Valid signature, `exp` two minutes ago (past the 30 s leeway).
    Expired,
    /// Signed with another secret.
    Forged,
    /// Not a JWT.
    Garbage(String),
}

/// A subscribe request built from known parts.
#[derive(Debug, Clone)]
struct Request {
    topics: Vec<String>,
    credential: Credential,
    place: Place,
    cursor: Option<String>,
}

fn topic_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(public|private)\\.[a-z0-9]{1,6}",
        1 => "[A-Za-z0-9_.:/@~-]{1,8}",
        1 => "[a-z]{0,3}[ #%&=+?\\x00\\n\\u{e9}][a-z]{0,3}",
        1 => Just(String::new()),
        1 => Just("t".repeat(201)),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let credential = prop_oneof![
        Just(Credential::None),
        proptest::collection::vec(
            prop_oneof![
                "private\\.[a-z0-9]{1,2}",
                Just("private.*".to_owned()),
                Just("*".to_owned())
            ],
            0..3
        )
        .prop_map(Credential::Valid),
        Just(Credential::Expired),
        Just(Credential::Forged),
        "[ -~]{0,30}".prop_map(Credential::Garbage),
    ];
    let place = prop_oneof![Just(Place::Header), Just(Place::Cookie), Just(Place::Query)];
    let cursor = proptest::option::of(prop_oneof![
        "[A-Za-z0-9_-]{0,20}",
        ".{0,10}",
        Just("AeQMKSwAxaGpAQ".to_owned()),
    ]);
    (
        prop_oneof![
            8 => proptest::collection::vec(topic_name(), 0..6),
            1 => proptest::collection::vec("public\\.[0-9]{1,3}", 60..70),
        ],
        credential,
        place,
        cursor,
    )
        .prop_map(|(topics, credential, place, cursor)| Request {
            topics,
            credential,
            place,
            cursor,
        })
}

fn covers(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => topic == pattern,
    }
}

/// docs/protocol.md (sections 1 and 6), read independently of subscribe.rs
/// and auth.rs.
/// The fuzzed node's public topics are `public.*`.
fn expected_status(request: &Request) -> u16 {
    let valid = |t: &str| {
        (1..=200).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@~".contains(&b))
    };
    let mut distinct: Vec<&str> = Vec::new();
    for topic in &request.topics {
        if !valid(topic) {
            return 400;
        }
        if !distinct.contains(&topic.as_str()) {
            distinct.push(topic);
        }
    }
    if distinct.is_empty() || distinct.len() > 64 {
        return 400;
    }
    let private: Vec<&str> = distinct
        .into_iter()
        .filter(|t| !covers("public.*", t))
        .collect();
    if private.is_empty() {
        return 200;
    }
    match &request.credential {
        Credential::None | Credential::Expired | Credential::Forged | Credential::Garbage(_) => 401,
        Credential::Valid(patterns) => {
            if private
                .iter()
                .all(|t| patterns.iter().any(|p| covers(p, t)))
            {
                200
            } else {
                403
            }
        }
    }
}

fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn requests_built_from_known_parts_get_the_status_the_contract_gives() {
    with_state(|node| {
        TestRunner::new(config(file!()))
            .run(&request(), |request| {
                let jwt = match &request.credential {
                    Credential::None => None,
                    Credential::Valid(patterns) => Some(token(
                        json!({"herald": {"subscribe": patterns}, "exp": now() + 600}),
                        JWT_SECRET,
                    )),
                    Credential::Expired => Some(token(
                        json!({"herald": {"subscribe": ["*"]}, "exp": now() - 120}),
                        JWT_SECRET,
                    )),
                    Credential::Forged => Some(token(
                        json!({"herald": {"subscribe": ["*"]}}),
                        "not-the-secret",
                    )),
                    Credential::Garbage(text) => Some(text.clone()),
                };
                let mut query: Vec<String> = request
                    .topics
                    .iter()
                    .map(|t| format!("topic={}", query_encode(t)))
                    .collect();
                if let Some(cursor) = &request.cursor {
                    query.push(format!("last_event_id={}", query_encode(cursor)));
                }
                let (mut authorization, mut cookie) = (None, None);
                match (&jwt, request.place) {
                    (Some(jwt), Place::Header) => authorization = Some(format!("Bearer {jwt}")),
                    (Some(jwt), Place::Cookie) => cookie = Some(format!("a=b; herald_token={jwt}")),
                    (Some(jwt), Place::Query) => {
                        query.push(format!("access_token={}", query_encode(jwt)));
                    }
                    (None, _) => {}
                }
                let query = query.join("&");
                let head = SubscribeHead {
                    query: &query,
                    last_event_id: None,
                    authorization: authorization.as_deref().map(str::as_bytes),
                    cookie: cookie.as_deref().map(str::as_bytes),
                    ..SubscribeHead::default()
                };
                let actual = status(node.subscribe(&head))?;
                let expected = expected_status(&request);
                // A garbage "token" sent in a cookie may hold `;`, which ends
                // the cookie early; it is still no valid token.
                ensure(actual == expected, || {
                    format!("{request:?} (query {query:?}): herald says {actual}, the protocol says {expected}")
                })
            })
            .unwrap();
    });
}

#[test]
fn topic_names_are_accepted_exactly_when_the_contract_allows_them() {
    let names = prop_oneof![
        mutated_text("topic"),
        "[A-Za-z0-9_.:/@~-]{1,210}",
        ".{0,20}",
    ];
    TestRunner::new(config(file!()))
        .run(&names, |name| {
            let expected = (1..=200).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@~".contains(&b));
            let actual = Topic::new(&name);
            ensure(actual.is_ok() == expected, || {
                format!(
                    "topic {name:?}: herald says {actual:?}, the protocol says valid={expected}"
                )
            })?;
            if let Ok(topic) = actual {
                ensure(topic.as_str() == name, || format!("{name:?} changed"))?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn event_names_are_accepted_exactly_when_the_contract_allows_them() {
    let names = prop_oneof![
        mutated_text("event"),
        "(herald\\.)?[^\\x00-\\x1f\\x7f]{0,70}",
        ".{0,20}",
    ];
    TestRunner::new(config(file!()))
        .run(&names, |name| {
            let expected = (1..=64).contains(&name.len())
                && !name.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}')
                && !name.starts_with("herald.");
            let actual = EventName::new(&name);
            ensure(actual.is_ok() == expected, || {
                format!(
                    "event {name:?}: herald says {actual:?}, the protocol says valid={expected}"
                )
            })?;
            // What is accepted can never end a line or a frame.
            if actual.is_ok() {
                ensure(!name.contains(['\r', '\n', '\0']), || format!("{name:?}"))?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn every_cursor_seed_decodes_without_panic() {
    for seed in seeds("cursor") {
        let _ = Cursor::decode(&String::from_utf8_lossy(&seed));
    }
}

#[test]
fn arbitrary_cursors_never_panic_and_written_cursors_read_back() {
    let entry = (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(tag, epoch, seq)| {
        // A position of epoch 0 is "nothing yet": its seq is 0.
        let seq = if epoch == 0 { 0 } else { seq };
        (tag, Position::new(epoch, seq))
    });
    let entries = proptest::collection::vec(entry, 1..70);
    let garbage = prop_oneof![mutated_text("cursor"), "[A-Za-z0-9_-]{0,64}"];
    TestRunner::new(config(file!()))
        .run(&(entries, garbage), |(entries, garbage)| {
            let _ = Cursor::decode(&garbage);
            let text = cursor::encode(entries.iter().copied());
            ensure(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                || format!("cursor {text:?} is not base64url"),
            )?;
            let decoded = Cursor::decode(&text);
            if text.len() <= 4096 {
                ensure(decoded == Ok(Cursor::new(entries.clone())), || {
                    format!("{entries:?} encoded as {text:?} decoded as {decoded:?}")
                })?;
            }
            Ok(())
        })
        .unwrap();
}
