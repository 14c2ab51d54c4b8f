//! Auth against the application's identity systems (docs/protocol.md §6):
//! RS256/ES256 tokens verified with an identity provider's JWKS, picked by
//! `kid` and rotated without a restart; what happens before the keys were
//! ever fetched; `iss`/`aud` checks for every token; user topics granted by
//! a token's `sub`; and the subscribe hook: what it is sent, how its
//! answers are obeyed and cached, when it is never asked, and its metrics.
//!
//! The provider ([`JwksServer`]) and the hook ([`HookServer`]) are real
//! HTTP servers owned by the test. Answers a subscriber can get on either
//! connection kind (a stream on a new connection, and one requested on a
//! reused keep-alive connection) are checked on both.

use std::time::{Duration, Instant};

use herald_testkit::{
    encode_path_segment, eventually, unix_now, unsigned_token, Api, HookBehavior, HookServer, Item,
    JwksServer, Node, Reply, SseStream, TokenSigner, TIMEOUT,
};
use reqwest::{Client, Method};
use serde_json::{json, Value};

const SECRET: &str = "identity-test-secret";
const KEY: &str = "identity-publish-key";
/// Every node's `server.retry`: a stream told to retry later gets a
/// `retry:` between 1× and 3× of it.
const RETRY_MS: u64 = 400;
/// How long a node may take to fetch a key set it never had: its retries
/// back off to 8 s between attempts, on a machine that may be busy.
const FIRST_FETCH: Duration = Duration::from_secs(25);

// ---- nodes and requests ------------------------------------------------------

/// A node with only `public.*` public, a short `retry:`, and `auth` holding
/// the TOML lines `auth_lines` too.
async fn node_with(auth_lines: &str, server_lines: &str) -> Node {
    Node::builder()
        .config_file(&format!(
            "[server]\nretry = \"{RETRY_MS}ms\"\n{server_lines}\n\n\
             [auth]\npublic_topics = [\"public.*\"]\n{auth_lines}\n"
        ))
        .start()
        .await
}

/// A node verifying tokens with `jwks`, fetched again every `refresh`.
async fn jwks_node(jwks: &JwksServer, refresh: &str, auth_lines: &str) -> Node {
    node_with(
        &format!(
            "jwks_url = \"{}\"\njwks_refresh = \"{refresh}\"\n{auth_lines}",
            jwks.url()
        ),
        "",
    )
    .await
}

/// A node asking `hook`, with a JWT secret and a publish key as well.
async fn hook_node(hook: &HookServer, auth_lines: &str) -> Node {
    node_with(
        &format!(
            "jwt_secret = \"{SECRET}\"\npublish_keys = [\"{KEY}\"]\n\
             subscribe_hook_url = \"{}\"\n{auth_lines}",
            hook.url()
        ),
        "",
    )
    .await
}

fn subscriber(patterns: &[&str]) -> Value {
    json!({"herald": {"subscribe": patterns}, "exp": unix_now() + 600})
}

fn publisher(patterns: &[&str]) -> Value {
    json!({"herald": {"publish": patterns}, "exp": unix_now() + 600})
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `topic=…&topic=…`, each name percent-encoded.
fn topics_query(topics: &[&str]) -> String {
    topics
        .iter()
        .map(|t| format!("topic={}", encode_path_segment(t)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST /v1/publish` of `data` to `topic` with `Authorization: Bearer
/// credential`, or no credential at all.
async fn publish(node: &Node, credential: Option<&str>, topic: &str, data: &str) -> Reply {
    let header = credential.map(bearer);
    let headers: Vec<(&str, &str)> = header
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    Reply::send(
        node.api().client(),
        Method::POST,
        &format!("{}/v1/publish", node.url()),
        &headers,
        Some(&json!({"topic": topic, "data": data})),
    )
    .await
}

async fn publish_ok(node: &Node, credential: &str, topic: &str, data: &str) {
    let reply = publish(node, Some(credential), topic, data).await;
    assert_eq!(reply.status, 202, "publish to {topic}: {reply:?}");
}

/// Asserts the status of a subscribe request on both connection kinds:
/// `200` an event stream, anything else a problem answer.
async fn assert_subscribe_status(
    node: &Node,
    topics: &[&str],
    headers: &[(&str, &str)],
    status: u16,
    what: &str,
) {
    for (label, reply) in node
        .subscribe_on_both_kinds(&topics_query(topics), headers)
        .await
    {
        if status == 200 {
            assert_eq!(
                reply.status, 200,
                "{what}, {topics:?} on {label}: {reply:?}"
            );
        } else {
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{what}, {topics:?} on {label}: {reply:?}"
            );
            reply.assert_problem(status);
        }
    }
}

/// Opens a stream on `topics` with `headers` over `client`.
async fn open_on(
    node: &Node,
    client: &Client,
    topics: &[&str],
    headers: &[(&str, &str)],
) -> SseStream {
    headers
        .iter()
        .fold(
            node.subscribe_request().topics(topics),
            |request, (n, v)| request.header(n, v),
        )
        .send_on(client)
        .await
}

/// Asserts that `stream` is open: `200`, `text/event-stream`, and the
/// `retry:` and `: herald stream open` every stream starts with (a stream
/// told to retry later carries another comment and ends).
async fn assert_open(stream: &mut SseStream, what: &str) {
    assert_eq!(stream.status(), 200, "{what}: {stream:?}");
    assert_eq!(
        stream.next_item(TIMEOUT).await,
        Item::Retry(RETRY_MS),
        "{what}"
    );
    assert_eq!(
        stream.next_item(TIMEOUT).await,
        Item::Comment("herald stream open".into()),
        "{what}"
    );
}

/// Asserts the retry-later answer (docs/protocol.md §1): `200`,
/// `text/event-stream`, one `retry:` between 1× and 3× `server.retry`, no
/// event, and the end of the response.
async fn assert_retry_later(stream: &mut SseStream, what: &str) {
    let items = stream.expect_closed(TIMEOUT).await;
    let body = String::from_utf8_lossy(stream.raw()).into_owned();
    assert_eq!(
        stream.status(),
        200,
        "{what}: expected the retry-later answer, got {} {body:?}",
        stream.status()
    );
    let content_type = stream.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{what}: content type {content_type:?}"
    );
    let retries: Vec<u64> = items
        .iter()
        .filter_map(|item| match item {
            Item::Retry(ms) => Some(*ms),
            _ => None,
        })
        .collect();
    assert!(
        matches!(retries[..], [ms] if (RETRY_MS..=3 * RETRY_MS).contains(&ms)),
        "{what}: one retry: in {RETRY_MS}..={}ms, got {body:?}",
        3 * RETRY_MS
    );
    assert!(
        !items.iter().any(|item| matches!(item, Item::Event(_))
            || *item == Item::Comment("herald stream open".into())),
        "{what}: a stream opened: {body:?}"
    );
}

/// A sample of `/metrics`, zero when the series is not exposed yet.
async fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    node.api().metric(name, labels).await.unwrap_or(0.0)
}

/// The hook's counters as `(allow, deny, error, calls observed)`.
async fn hook_metrics(node: &Node) -> (f64, f64, f64, f64) {
    let metrics = node.api().metrics().await;
    let requests = |result| {
        metrics
            .value("herald_auth_hook_requests_total", &[("result", result)])
            .unwrap_or(0.0)
    };
    (
        requests("allow"),
        requests("deny"),
        requests("error"),
        metrics
            .value("herald_auth_hook_duration_seconds_count", &[])
            .unwrap_or(0.0),
    )
}

// ---- JWKS ----------------------------------------------------------------------

/// An identity provider with an RSA and an EC signing key.
struct Provider {
    rsa: TokenSigner,
    ec: TokenSigner,
    jwks: JwksServer,
}

fn provider() -> Provider {
    let rsa = TokenSigner::rs256();
    let ec = TokenSigner::es256();
    let jwks = JwksServer::start(vec![rsa.jwk("rsa-1"), ec.jwk("ec-1")]);
    Provider { rsa, ec, jwks }
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_the_key_their_kid_names() {
    let Provider { rsa, ec, jwks } = provider();
    let node = jwks_node(&jwks, "5m", "").await;
    for (signer, kid) in [(&rsa, "rsa-1"), (&ec, "ec-1")] {
        let alg = signer.alg();
        let header = bearer(&signer.sign_with_kid(kid, &subscriber(&["private.*"])));
        let mut streams = Vec::new();
        for (label, client) in node.clients_of_both_kinds().await {
            let mut stream = open_on(
                &node,
                &client,
                &["private.1"],
                &[("authorization", &header)],
            )
            .await;
            assert_open(&mut stream, &format!("{alg} subscriber on {label}")).await;
            streams.push(stream);
        }
        let publish_token = signer.sign_with_kid(kid, &publisher(&["private.*"]));
        publish_ok(&node, &publish_token, "private.1", alg).await;
        for stream in &mut streams {
            assert_eq!(stream.event().await.data, alg);
        }
        publish(&node, Some(&publish_token), "other", "x")
            .await
            .assert_problem(403);
    }

    let other_rsa = TokenSigner::rs256();
    let claims = subscriber(&["*"]);
    let refused = [
        (
            "RS256 naming the EC key's kid",
            rsa.sign_with_kid("ec-1", &claims),
        ),
        (
            "ES256 naming the RSA key's kid",
            ec.sign_with_kid("rsa-1", &claims),
        ),
        (
            "another RSA key under a known kid",
            other_rsa.sign_with_kid("rsa-1", &claims),
        ),
        (
            "expired",
            rsa.sign_with_kid(
                "rsa-1",
                &json!({"herald": {"subscribe": ["*"]}, "exp": unix_now() - 300}),
            ),
        ),
        (
            "HS256 naming the RSA key's kid",
            TokenSigner::hs256("guess").sign_with_header(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
                &claims,
            ),
        ),
        ("alg none", unsigned_token(&claims)),
    ];
    for (what, token) in refused {
        let header = bearer(&token);
        assert_subscribe_status(
            &node,
            &["private.1"],
            &[("authorization", &header)],
            401,
            what,
        )
        .await;
    }
}

#[tokio::test]
async fn with_a_jwks_and_no_other_key_publishing_needs_credentials() {
    let Provider { rsa, jwks, .. } = provider();
    let node = jwks_node(&jwks, "5m", "").await;
    let reply = publish(&node, None, "t", "open?").await;
    reply.assert_problem(401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    // A subscriber's token grants no publishing.
    let subscriber_token = rsa.sign_with_kid("rsa-1", &subscriber(&["*"]));
    publish(&node, Some(&subscriber_token), "t", "x")
        .await
        .assert_problem(403);
    assert_eq!(node.api().history_length("t").await, 0);
    let publisher_token = rsa.sign_with_kid("rsa-1", &publisher(&["t"]));
    publish_ok(&node, &publisher_token, "t", "signed").await;
    assert_eq!(node.api().history_length("t").await, 1);
}

#[tokio::test]
async fn a_new_kid_is_fetched_on_demand_at_most_once_per_10_s() {
    let rsa = TokenSigner::rs256();
    let jwks = JwksServer::start(vec![rsa.jwk("rsa-1")]);
    // A long refresh: only the start-up fetch and on-demand ones happen.
    let node = jwks_node(&jwks, "5m", "").await;
    // Once herald has the start-up set, a known kid needs no fetch. (A
    // token sent before it arrived would make herald fetch on demand and
    // start the 10 s window early.)
    eventually(TIMEOUT, "the start-up fetch", || async {
        (jwks.fetches() >= 1).then_some(())
    })
    .await;
    let known = bearer(&rsa.sign_with_kid("rsa-1", &subscriber(&["private.*"])));
    assert_subscribe_status(
        &node,
        &["private.1"],
        &[("authorization", &known)],
        200,
        "a known kid",
    )
    .await;
    assert_eq!(jwks.fetches(), 1, "a known kid made herald fetch");

    // The provider adds a key; the first token naming it is accepted.
    let rotated = TokenSigner::es256();
    jwks.set_keys(vec![rsa.jwk("rsa-1"), rotated.jwk("es-2")]);
    let new_kid = bearer(&rotated.sign_with_kid("es-2", &subscriber(&["private.*"])));
    let on_demand_fetch = Instant::now();
    assert_subscribe_status(
        &node,
        &["private.1"],
        &[("authorization", &new_kid)],
        200,
        "a kid added at the provider",
    )
    .await;
    assert_eq!(jwks.fetches(), 2, "one fetch for the new kid");

    // Within 10 s of that fetch, unknown kids fetch nothing: a key added
    // now, and kids nobody published, are refused.
    let later = TokenSigner::rs256();
    jwks.set_keys(vec![
        rsa.jwk("rsa-1"),
        rotated.jwk("es-2"),
        later.jwk("rsa-3"),
    ]);
    let too_soon = bearer(&later.sign_with_kid("rsa-3", &subscriber(&["private.*"])));
    assert_subscribe_status(
        &node,
        &["private.1"],
        &[("authorization", &too_soon)],
        401,
        "a new kid within 10 s of the last on-demand fetch",
    )
    .await;
    for i in 0..10 {
        let invented = bearer(&rsa.sign_with_kid(&format!("invented-{i}"), &subscriber(&["*"])));
        assert_subscribe_status(
            &node,
            &["private.1"],
            &[("authorization", &invented)],
            401,
            "an invented kid",
        )
        .await;
    }
    assert_eq!(jwks.fetches(), 2, "unknown kids made herald fetch again");

    // Once 10 s have passed, the next token naming it fetches again.
    let client = Api::without_keep_alive(node.url()).client().clone();
    let url = format!("{}/v1/events?topic=private.1", node.url());
    eventually(
        Duration::from_secs(10) + TIMEOUT,
        "the kid added later to be accepted",
        || async {
            let reply = Reply::send(
                &client,
                Method::GET,
                &url,
                &[("authorization", &too_soon)],
                None,
            )
            .await;
            (reply.status == 200).then_some(())
        },
    )
    .await;
    let waited = on_demand_fetch.elapsed();
    assert!(
        waited >= Duration::from_millis(9_500),
        "fetched on demand again after {waited:?}, less than 10 s"
    );
    assert_eq!(jwks.fetches(), 3, "one more fetch, not one per request");
    assert_subscribe_status(
        &node,
        &["private.1"],
        &[("authorization", &too_soon)],
        200,
        "the kid added later",
    )
    .await;
}

#[tokio::test]
async fn key_rotation_needs_no_restart_and_removed_keys_stop_verifying_after_a_refresh() {
    let Provider { rsa, ec, jwks } = provider();
    let node = jwks_node(&jwks, "1s", "").await;
    let rsa_token = bearer(&rsa.sign_with_kid("rsa-1", &subscriber(&["private.*"])));
    let ec_token = bearer(&ec.sign_with_kid("ec-1", &subscriber(&["private.*"])));
    for (what, header) in [("rsa-1", &rsa_token), ("ec-1", &ec_token)] {
        assert_subscribe_status(
            &node,
            &["private.1"],
            &[("authorization", header)],
            200,
            what,
        )
        .await;
    }
    // The set is fetched again every second.
    let fetched = jwks.fetches();
    eventually(TIMEOUT, "two periodic refreshes", || async {
        (jwks.fetches() >= fetched + 2).then_some(())
    })
    .await;

    // Rotation: rsa-1 is retired, rsa-2 takes its place.
    let successor = TokenSigner::rs256();
    jwks.set_keys(vec![ec.jwk("ec-1"), successor.jwk("rsa-2")]);
    let successor_token = bearer(&successor.sign_with_kid("rsa-2", &subscriber(&["private.*"])));
    let client = Api::without_keep_alive(node.url()).client().clone();
    let url = format!("{}/v1/events?topic=private.1", node.url());
    let status_with = async |header: &str| {
        Reply::send(
            &client,
            Method::GET,
            &url,
            &[("authorization", header)],
            None,
        )
        .await
        .status
    };
    eventually(TIMEOUT, "the retired kid to be refused", || async {
        (status_with(&rsa_token).await == 401).then_some(())
    })
    .await;
    eventually(TIMEOUT, "the new kid to be accepted", || async {
        (status_with(&successor_token).await == 200).then_some(())
    })
    .await;
    for (what, header, status) in [
        ("the retired rsa-1", &rsa_token, 401),
        ("the new rsa-2", &successor_token, 200),
        ("the kept ec-1", &ec_token, 200),
    ] {
        assert_subscribe_status(
            &node,
            &["private.1"],
            &[("authorization", header)],
            status,
            what,
        )
        .await;
    }
}

#[tokio::test]
async fn until_the_keys_are_first_fetched_streams_retry_later_and_publishes_get_503() {
    let rsa = TokenSigner::rs256();
    // The provider is down when the node starts: nothing listens.
    let jwks = JwksServer::reserve(vec![rsa.jwk("rsa-1")]);
    let node = jwks_node(&jwks, "5m", "").await;
    let subscribe_header = bearer(&rsa.sign_with_kid("rsa-1", &subscriber(&["private.*"])));
    let publish_token = rsa.sign_with_kid("rsa-1", &publisher(&["private.*"]));

    let assert_unavailable = |phase: &'static str| {
        let node = &node;
        let subscribe_header = &subscribe_header;
        let publish_token = &publish_token;
        async move {
            for (label, client) in node.clients_of_both_kinds().await {
                let mut stream = open_on(
                    node,
                    &client,
                    &["private.1"],
                    &[("authorization", subscribe_header)],
                )
                .await;
                assert_retry_later(&mut stream, &format!("{phase}, on {label}")).await;
            }
            let reply = publish(node, Some(publish_token), "private.1", "early").await;
            reply.assert_problem(503);
            let retry_after = reply
                .header("retry-after")
                .unwrap_or_else(|| panic!("{phase}: a 503 publish without Retry-After: {reply:?}"));
            assert!(
                retry_after.parse::<u64>().is_ok(),
                "{phase}: Retry-After {retry_after:?} is not a number of seconds"
            );
            // Tokens the keys are not needed for are judged as ever.
            assert_eq!(
                publish(node, None, "private.1", "anonymous").await.status,
                401,
                "{phase}"
            );
        }
    };
    assert_unavailable("provider down").await;
    let mut public = node.subscribe(&["public.news"]).await;
    assert_open(&mut public, "a public topic needs no keys").await;

    // The provider is up but failing.
    jwks.set_available(false);
    jwks.listen();
    eventually(FIRST_FETCH, "a fetch answered 503", || async {
        (jwks.fetches() >= 1).then_some(())
    })
    .await;
    assert_unavailable("provider answering 503").await;
    assert_eq!(node.api().history_length("private.1").await, 0);

    // The provider recovers: herald fetches again by itself.
    jwks.set_available(true);
    eventually(
        FIRST_FETCH,
        "a publish accepted once the keys are fetched",
        || async {
            let reply = publish(&node, Some(&publish_token), "private.ready", "probe").await;
            (reply.status == 202).then_some(())
        },
    )
    .await;
    let mut streams = Vec::new();
    for (label, client) in node.clients_of_both_kinds().await {
        let mut stream = open_on(
            &node,
            &client,
            &["private.1"],
            &[("authorization", &subscribe_header)],
        )
        .await;
        assert_open(&mut stream, &format!("once fetched, on {label}")).await;
        streams.push(stream);
    }
    publish_ok(&node, &publish_token, "private.1", "verified").await;
    for stream in &mut streams {
        assert_eq!(stream.event().await.data, "verified");
    }
}

#[tokio::test]
async fn issuer_and_audience_must_match_for_every_token_whatever_its_algorithm() {
    let Provider { rsa, jwks, .. } = provider();
    let node = jwks_node(
        &jwks,
        "5m",
        &format!(
            "jwt_secret = \"{SECRET}\"\njwt_issuer = \"https://id.example\"\n\
             jwt_audience = \"herald-test\""
        ),
    )
    .await;
    let hs256 = TokenSigner::hs256(SECRET);
    let cases: [(&str, Value, u16); 8] = [
        (
            "the right iss and aud",
            json!({"iss": "https://id.example", "aud": "herald-test"}),
            200,
        ),
        (
            "the right aud among others",
            json!({"iss": "https://id.example", "aud": ["other-app", "herald-test"]}),
            200,
        ),
        (
            "another iss",
            json!({"iss": "https://evil.example", "aud": "herald-test"}),
            401,
        ),
        (
            "the iss with a trailing slash",
            json!({"iss": "https://id.example/", "aud": "herald-test"}),
            401,
        ),
        ("no iss", json!({"aud": "herald-test"}), 401),
        (
            "another aud",
            json!({"iss": "https://id.example", "aud": "other-app"}),
            401,
        ),
        (
            "only other auds",
            json!({"iss": "https://id.example", "aud": ["other-app", "herald"]}),
            401,
        ),
        ("no aud", json!({"iss": "https://id.example"}), 401),
    ];
    for (what, identity, status) in cases {
        let mut claims = json!({
            "herald": {"subscribe": ["private.*"], "publish": ["private.*"]},
            "exp": unix_now() + 600,
        });
        for (key, value) in identity.as_object().expect("an object") {
            claims[key] = value.clone();
        }
        for (alg, token) in [
            ("RS256 from the JWKS", rsa.sign_with_kid("rsa-1", &claims)),
            ("HS256", hs256.sign(&claims)),
        ] {
            let what = format!("{alg}, {what}");
            let header = bearer(&token);
            assert_subscribe_status(
                &node,
                &["private.1"],
                &[("authorization", &header)],
                status,
                &what,
            )
            .await;
            let reply = publish(&node, Some(&token), "private.1", "x").await;
            let expected = if status == 200 { 202 } else { status };
            assert_eq!(reply.status, expected, "publish with {what}: {reply:?}");
        }
    }
}

// ---- user topics -----------------------------------------------------------------

async fn user_topics_node() -> Node {
    node_with(
        &format!(
            "jwt_secret = \"{SECRET}\"\npublish_keys = [\"{KEY}\"]\n\
             user_topics = [\"user.{{sub}}\", \"user.{{sub}}.*\"]"
        ),
        "",
    )
    .await
}

#[tokio::test]
async fn a_valid_token_opens_the_user_topics_of_its_own_sub() {
    let node = user_topics_node().await;
    let hs256 = TokenSigner::hs256(SECRET);
    // No herald claim at all: the user topics are all it grants.
    let token = hs256.sign(&json!({"sub": "42", "exp": unix_now() + 600}));
    let header = bearer(&token);
    let auth = [("authorization", header.as_str())];
    for topics in [
        &["user.42"][..],
        &["user.42.orders"],
        &["user.42.orders.eu"],
        &["user.42", "user.42.orders", "public.news"],
    ] {
        assert_subscribe_status(&node, topics, &auth, 200, "sub 42").await;
    }
    for topics in [
        &["user.43"][..],
        &["user.4"],
        &["user.420"],
        &["user.42x"],
        &["user"],
        &["user.42", "user.43"],
        &["users.42"],
        &["private.1"],
    ] {
        assert_subscribe_status(&node, topics, &auth, 403, "sub 42").await;
    }
    assert_subscribe_status(&node, &["user.42"], &[], 401, "no token").await;

    // A herald claim adds to the user topics.
    let with_claim = bearer(&hs256.sign(&json!({
        "sub": "42",
        "herald": {"subscribe": ["team.7"]},
        "exp": unix_now() + 600,
    })));
    let auth_claim = [("authorization", with_claim.as_str())];
    assert_subscribe_status(
        &node,
        &["user.42.orders", "team.7"],
        &auth_claim,
        200,
        "sub 42 and team.7",
    )
    .await;
    assert_subscribe_status(&node, &["team.8"], &auth_claim, 403, "sub 42 and team.7").await;

    // The stream carries the user's events; the token grants no publishing.
    let mut stream = node
        .subscribe_request()
        .topics(&["user.42", "user.42.orders"])
        .header("authorization", &header)
        .send()
        .await;
    assert_open(&mut stream, "user.42").await;
    publish_ok(&node, KEY, "user.42.orders", "order shipped").await;
    assert_eq!(stream.event().await.data, "order shipped");
    publish(&node, Some(&token), "user.42", "x")
        .await
        .assert_problem(403);
}

#[tokio::test]
async fn a_sub_that_is_not_a_plain_identifier_grants_no_user_topic() {
    let node = user_topics_node().await;
    let hs256 = TokenSigner::hs256(SECRET);
    let max = "a".repeat(128);
    let over = "b".repeat(129);
    let huge = "c".repeat(200);
    // Each sub with the topics a naive substitution would have granted.
    let hostile: Vec<(&str, Value, Vec<String>)> = vec![
        ("*", json!("*"), vec!["user.43".into(), "user.x.y".into()]),
        ("a space", json!("a b"), vec!["user.a".into()]),
        (
            "../",
            json!("../"),
            vec!["user../".into(), "user.../x".into()],
        ),
        (
            "a dot",
            json!("4.2"),
            vec!["user.4.2".into(), "user.4.2.x".into()],
        ),
        ("a colon", json!("a:b"), vec!["user.a:b".into()]),
        ("a slash", json!("a/b"), vec!["user.a/b".into()]),
        ("empty", json!(""), vec!["user.".into(), "user..x".into()]),
        ("129 bytes", json!(over), vec![format!("user.{over}")]),
        (
            "200 bytes",
            json!(huge),
            vec![format!("user.{}", &huge[..128]), "user.43".into()],
        ),
        ("the number 42", json!(42), vec!["user.42".into()]),
    ];
    for (what, sub, probes) in hostile {
        let token = hs256.sign(&json!({"sub": sub, "exp": unix_now() + 600}));
        let header = bearer(&token);
        for probe in &probes {
            // 403, not 401: the token is valid, its sub grants nothing.
            assert_subscribe_status(
                &node,
                &[probe.as_str()],
                &[("authorization", &header)],
                403,
                &format!("sub {what}"),
            )
            .await;
        }
    }
    let no_sub = bearer(&hs256.sign(&json!({"exp": unix_now() + 600})));
    assert_subscribe_status(
        &node,
        &["user.42"],
        &[("authorization", &no_sub)],
        403,
        "no sub",
    )
    .await;
    // RFC 7519 §4.1.2 makes `sub` a string, so a token whose sub is no
    // string or number at all may be refused whole (401) instead; either
    // way it opens nothing.
    for (what, sub) in [
        ("an array", json!(["42"])),
        ("null", Value::Null),
        ("an object", json!({"id": "42"})),
    ] {
        let header = bearer(&hs256.sign(&json!({"sub": sub, "exp": unix_now() + 600})));
        for (label, reply) in node
            .subscribe_on_both_kinds(&topics_query(&["user.42"]), &[("authorization", &header)])
            .await
        {
            let status = reply.status.as_u16();
            assert!(
                status == 401 || status == 403,
                "sub {what} on {label}: {reply:?}"
            );
            reply.assert_problem(status);
        }
    }

    // The limits themselves are allowed.
    for sub in [max.as_str(), "Az09_-@~"] {
        let header = bearer(&hs256.sign(&json!({"sub": sub, "exp": unix_now() + 600})));
        let own = format!("user.{sub}");
        let own_child = format!("user.{sub}.x");
        assert_subscribe_status(
            &node,
            &[own.as_str(), own_child.as_str()],
            &[("authorization", &header)],
            200,
            &format!("sub {sub}"),
        )
        .await;
    }
}

// ---- the subscribe hook -----------------------------------------------------------

#[tokio::test]
async fn the_hook_gets_the_clients_headers_and_only_the_topics_nothing_else_grants() {
    let hook = HookServer::start(HookBehavior::allow());
    let node = hook_node(&hook, "").await;
    let token = TokenSigner::hs256(SECRET).sign(&subscriber(&["private.mine"]));
    let authorization = bearer(&token);
    let mut streams = Vec::new();
    for (i, (label, client)) in node.clients_of_both_kinds().await.into_iter().enumerate() {
        // A cookie of its own, so the second request is not answered from
        // the first one's cached allowance.
        let cookie = format!("session=s-{i}; theme=dark");
        let calls = hook.calls();
        let mut stream = open_on(
            &node,
            &client,
            &[
                "public.news",
                "private.mine",
                "private.other",
                "private.more",
            ],
            &[
                ("cookie", &cookie),
                ("authorization", &authorization),
                ("origin", "https://app.example"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
        assert_open(&mut stream, label).await;
        assert_eq!(hook.calls(), calls + 1, "{label}: one hook call");
        let asked = hook.last_request();
        assert_eq!(
            (asked.method.as_str(), asked.path.as_str()),
            ("POST", HookServer::PATH),
            "{label}"
        );
        let content_type = asked.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{label}: {asked:?}"
        );
        let mut topics = asked.topics();
        topics.sort();
        assert_eq!(
            topics,
            ["private.more", "private.other"],
            "{label}: neither the public topic nor the token's"
        );
        assert_eq!(asked.header("cookie"), Some(cookie.as_str()), "{label}");
        assert_eq!(
            asked.header("authorization"),
            Some(authorization.as_str()),
            "{label}"
        );
        assert_eq!(
            asked.header("origin"),
            Some("https://app.example"),
            "{label}"
        );
        assert_eq!(
            asked.header("x-forwarded-for"),
            Some("203.0.113.9, 127.0.0.1"),
            "{label}"
        );
        streams.push(stream);
    }

    // No incoming X-Forwarded-For: just the client's address; headers the
    // client did not send are not made up.
    for (i, (label, client)) in node.clients_of_both_kinds().await.into_iter().enumerate() {
        let opaque = format!("Bearer sess-{i}");
        let mut stream = open_on(
            &node,
            &client,
            &["private.other"],
            &[("authorization", &opaque)],
        )
        .await;
        assert_open(&mut stream, label).await;
        let asked = hook.last_request();
        assert_eq!(
            asked.header("x-forwarded-for"),
            Some("127.0.0.1"),
            "{label}"
        );
        assert_eq!(asked.header("authorization"), Some(opaque.as_str()));
        assert_eq!(
            (asked.header("cookie"), asked.header("origin")),
            (None, None)
        );
        assert_eq!(asked.topics(), ["private.other"]);
        streams.push(stream);
    }

    publish_ok(&node, KEY, "private.other", "allowed by the hook").await;
    for stream in &mut streams {
        assert_eq!(stream.event().await.data, "allowed by the hook");
    }
}

#[tokio::test]
async fn with_a_hook_an_unverifiable_token_is_left_to_the_hook_instead_of_401() {
    let hook = HookServer::start(HookBehavior::allow());
    let node = hook_node(&hook, "").await;
    let claims = subscriber(&["private.*"]);
    let unverifiable = [
        ("an opaque session token", "sess-123".to_owned()),
        (
            "a JWT with a bad signature",
            TokenSigner::hs256("not-the-secret").sign(&claims),
        ),
        (
            "an expired JWT",
            TokenSigner::hs256(SECRET)
                .sign(&json!({"herald": {"subscribe": ["*"]}, "exp": unix_now() - 300})),
        ),
        ("an unsigned JWT", unsigned_token(&claims)),
    ];
    for (what, token) in &unverifiable {
        let header = bearer(token);
        for (label, client) in node.clients_of_both_kinds().await {
            let mut stream = open_on(
                &node,
                &client,
                &["private.1"],
                &[("authorization", &header)],
            )
            .await;
            assert_open(
                &mut stream,
                &format!("{what} allowed by the hook, on {label}"),
            )
            .await;
            assert_eq!(
                hook.last_request().header("authorization"),
                Some(header.as_str()),
                "{what}"
            );
        }
    }
    // No credentials at all: the hook decides too (by address, say).
    for (label, client) in node.clients_of_both_kinds().await {
        let mut stream = open_on(&node, &client, &["private.1"], &[]).await;
        assert_open(&mut stream, &format!("no credentials, on {label}")).await;
    }

    // The hook's refusal is the answer, for another topic (the allowances
    // above are cached).
    hook.set_behavior(HookBehavior::Status(403));
    for (what, token) in &unverifiable {
        let header = bearer(token);
        assert_subscribe_status(
            &node,
            &["private.2"],
            &[("authorization", &header)],
            403,
            &format!("{what} refused by the hook"),
        )
        .await;
    }
}

#[tokio::test]
async fn the_hooks_401_and_403_reach_the_subscriber_as_problem_answers() {
    let hook = HookServer::start(HookBehavior::Status(401));
    let node = hook_node(&hook, "").await;
    for (status, behavior) in [
        (401, HookBehavior::Status(401)),
        (403, HookBehavior::Status(403)),
    ] {
        hook.set_behavior(behavior);
        for (label, client) in node.clients_of_both_kinds().await {
            let calls = hook.calls();
            let cookie = format!("session={status}-{label}");
            let url = format!("{}/v1/events?topic=private.1", node.url());
            let reply = Reply::send(&client, Method::GET, &url, &[("cookie", &cookie)], None).await;
            assert_eq!(reply.status.as_u16(), status, "{label}: {reply:?}");
            let detail = reply.assert_problem(status);
            assert!(
                !detail.contains(&cookie),
                "{label}: the cookie leaked: {detail}"
            );
            assert_eq!(hook.calls(), calls + 1, "{label}");
        }
    }
    let (allow, deny, error, observed) = hook_metrics(&node).await;
    assert_eq!((allow, deny, error, observed), (0.0, 4.0, 0.0, 4.0));
}

#[tokio::test]
async fn a_hook_allowance_with_expires_in_closes_the_stream_then() {
    let hook = HookServer::start(HookBehavior::Allow {
        expires_in: Some(2),
    });
    let node = hook_node(&hook, "").await;
    let expired_before = metric(
        &node,
        "herald_disconnects_total",
        &[("reason", "token_expired")],
    )
    .await;
    let mut bounded = Vec::new();
    for (label, client) in node.clients_of_both_kinds().await {
        let cookie = format!("session=bounded-{label}");
        let mut stream = open_on(&node, &client, &["private.1"], &[("cookie", &cookie)]).await;
        assert_open(&mut stream, label).await;
        bounded.push((label, stream));
    }
    let opened = Instant::now();
    hook.set_behavior(HookBehavior::allow());
    let mut unbounded = node
        .subscribe_request()
        .topic("private.1")
        .header("cookie", "session=unbounded")
        .send()
        .await;
    assert_open(&mut unbounded, "an allowance without expires_in").await;

    publish_ok(&node, KEY, "private.1", "while allowed").await;
    for (_, stream) in &mut bounded {
        assert_eq!(stream.event().await.data, "while allowed");
    }
    for (label, stream) in &mut bounded {
        stream.expect_closed(Duration::from_secs(2) + TIMEOUT).await;
        let lived = opened.elapsed();
        assert!(
            lived >= Duration::from_millis(1_500),
            "{label}: closed after {lived:?}, well before expires_in"
        );
    }
    eventually(TIMEOUT, "two token_expired disconnects", || async {
        let now = metric(
            &node,
            "herald_disconnects_total",
            &[("reason", "token_expired")],
        )
        .await;
        (now >= expired_before + 2.0).then_some(())
    })
    .await;
    // Only the bounded streams were closed.
    publish_ok(&node, KEY, "private.1", "still allowed").await;
    assert_eq!(unbounded.event().await.data, "while allowed");
    assert_eq!(unbounded.event().await.data, "still allowed");
}

#[tokio::test]
async fn a_failing_or_silent_hook_makes_the_client_retry_and_opens_nothing() {
    let hook = HookServer::start(HookBehavior::Status(500));
    let node = hook_node(&hook, "subscribe_hook_timeout = \"500ms\"").await;
    let mut attempts = 0;
    for (what, behavior) in [
        ("500", HookBehavior::Status(500)),
        ("503", HookBehavior::Status(503)),
        ("a redirect", HookBehavior::Status(302)),
        ("404", HookBehavior::Status(404)),
        // It would allow, but only after herald's timeout.
        (
            "no answer within the timeout",
            HookBehavior::Delay(Duration::from_secs(2)),
        ),
    ] {
        hook.set_behavior(behavior);
        for (label, client) in node.clients_of_both_kinds().await {
            let calls = hook.calls();
            let cookie = format!("session={attempts}");
            let started = Instant::now();
            let mut stream = open_on(&node, &client, &["private.1"], &[("cookie", &cookie)]).await;
            assert_retry_later(&mut stream, &format!("hook answering {what}, on {label}")).await;
            assert_eq!(hook.calls(), calls + 1, "{what} on {label}");
            if matches!(behavior, HookBehavior::Delay(_)) {
                let waited = started.elapsed();
                assert!(
                    waited < Duration::from_secs(2),
                    "{label}: answered after {waited:?}, not at the 500ms timeout"
                );
            }
            attempts += 1;
        }
    }
    // The application is down: connections to the hook are refused.
    hook.stop().await;
    for (label, client) in node.clients_of_both_kinds().await {
        let mut stream = open_on(
            &node,
            &client,
            &["private.1"],
            &[("cookie", "session=down")],
        )
        .await;
        assert_retry_later(&mut stream, &format!("hook down, on {label}")).await;
        attempts += 1;
    }
    let (allow, deny, error, observed) = hook_metrics(&node).await;
    let attempts = f64::from(attempts);
    assert_eq!(
        (allow, deny, error, observed),
        (0.0, 0.0, attempts, attempts),
        "every failed call is an error, timeouts and refused connections included"
    );
}

#[tokio::test]
async fn hook_answers_are_reused_for_the_same_credentials_and_topics_but_errors_are_not() {
    let hook = HookServer::start(HookBehavior::allow());
    let node = hook_node(&hook, "").await;
    let [(_, fresh), (_, reused)] = node.clients_of_both_kinds().await;
    let mut open = Vec::new();
    // Open streams are kept, so that their connections are not reused.
    let mut expect_open = async |client: &Client, topics: &[&str], headers: &[(&str, &str)]| {
        let mut stream = open_on(&node, client, topics, headers).await;
        assert_open(&mut stream, &format!("{topics:?} {headers:?}")).await;
        open.push(stream);
    };

    let session_1 = [("cookie", "session=1")];
    expect_open(&fresh, &["private.1"], &session_1).await;
    assert_eq!(hook.calls(), 1);
    // The same question, on the other connection kind: answered from the
    // cache.
    expect_open(&reused, &["private.1"], &session_1).await;
    assert_eq!(hook.calls(), 1, "the same cookie and topics asked again");
    // Another cookie, another Authorization, other topics: asked again.
    expect_open(&fresh, &["private.1"], &[("cookie", "session=2")]).await;
    assert_eq!(hook.calls(), 2, "another cookie");
    expect_open(
        &fresh,
        &["private.1"],
        &[("cookie", "session=1"), ("authorization", "Bearer sess-9")],
    )
    .await;
    assert_eq!(hook.calls(), 3, "another Authorization");
    expect_open(&fresh, &["private.2"], &session_1).await;
    assert_eq!(hook.calls(), 4, "other topics");

    // A denial is reused too.
    hook.set_behavior(HookBehavior::Status(403));
    let session_3 = [("cookie", "session=3")];
    assert_subscribe_status(&node, &["private.1"], &session_3, 403, "denied").await;
    assert_eq!(hook.calls(), 5, "a denial is asked once for both requests");
    hook.set_behavior(HookBehavior::allow());
    assert_subscribe_status(&node, &["private.1"], &session_3, 403, "denied, cached").await;
    assert_eq!(hook.calls(), 5);

    // An error is not: the next request asks again.
    hook.set_behavior(HookBehavior::Status(500));
    let session_4 = [("cookie", "session=4")];
    let mut stream = open_on(&node, &fresh, &["private.1"], &session_4).await;
    assert_retry_later(&mut stream, "hook answering 500").await;
    assert_eq!(hook.calls(), 6);
    hook.set_behavior(HookBehavior::allow());
    expect_open(&fresh, &["private.1"], &session_4).await;
    assert_eq!(hook.calls(), 7, "an error was reused");
    expect_open(&reused, &["private.1"], &session_4).await;
    assert_eq!(hook.calls(), 7);

    // Cached answers are no hook requests.
    let (allow, deny, error, observed) = hook_metrics(&node).await;
    assert_eq!((allow, deny, error, observed), (5.0, 1.0, 1.0, 7.0));
}

#[tokio::test]
async fn a_cached_hook_answer_is_asked_again_after_subscribe_hook_cache() {
    let hook = HookServer::start(HookBehavior::allow());
    let node = hook_node(&hook, "subscribe_hook_cache = \"1s\"").await;
    let client = Api::without_keep_alive(node.url()).client().clone();
    let url = format!("{}/v1/events?topic=private.1", node.url());
    let cookie = [("cookie", "session=1")];
    let first_asked = Instant::now();
    assert_eq!(
        Reply::send(&client, Method::GET, &url, &cookie, None)
            .await
            .status,
        200
    );
    assert_eq!(
        Reply::send(&client, Method::GET, &url, &cookie, None)
            .await
            .status,
        200
    );
    assert_eq!(hook.calls(), 1, "asked again within the cache window");
    eventually(TIMEOUT, "the hook asked again", || async {
        let reply = Reply::send(&client, Method::GET, &url, &cookie, None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        (hook.calls() == 2).then_some(())
    })
    .await;
    let waited = first_asked.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "asked again after {waited:?}, within the 1 s cache"
    );
}

#[tokio::test]
async fn public_topics_covered_topics_and_bad_requests_never_reach_the_hook() {
    let hook = HookServer::start(HookBehavior::allow());
    let node = hook_node(&hook, "").await;
    let token = TokenSigner::hs256(SECRET).sign(&subscriber(&["private.*"]));
    let header = bearer(&token);
    let credentials = [("cookie", "session=1"), ("authorization", "Bearer sess-1")];
    assert_subscribe_status(&node, &["public.news"], &[], 200, "public").await;
    assert_subscribe_status(
        &node,
        &["public.news", "public.sport"],
        &credentials,
        200,
        "public, with credentials",
    )
    .await;
    assert_subscribe_status(
        &node,
        &["private.1", "public.news"],
        &[("authorization", &header)],
        200,
        "covered by the token",
    )
    .await;
    assert_eq!(hook.calls(), 0, "{:?}", hook.requests());

    let too_many: Vec<String> = (0..65).map(|i| format!("private.{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let too_long = format!("private.{}", "x".repeat(200));
    for (what, topics) in [
        ("a space in a topic", vec!["private a"]),
        ("a * in a topic", vec!["private.*"]),
        ("no topic", vec![]),
        ("an over-long topic", vec![too_long.as_str()]),
        ("65 topics", too_many),
    ] {
        assert_subscribe_status(&node, &topics, &credentials, 400, what).await;
    }
    assert_eq!(hook.calls(), 0, "{:?}", hook.requests());
}

#[tokio::test]
async fn a_full_node_refuses_without_asking_the_hook() {
    let hook = HookServer::start(HookBehavior::allow());
    let node = node_with(
        &format!("subscribe_hook_url = \"{}\"", hook.url()),
        "max_connections = 1",
    )
    .await;
    let mut only = node.subscribe(&["public.news"]).await;
    assert_open(&mut only, "the one stream the node takes").await;
    for (label, client) in node.clients_of_both_kinds().await {
        let mut stream = open_on(&node, &client, &["private.1"], &[("cookie", "session=1")]).await;
        assert_retry_later(&mut stream, &format!("a full node, on {label}")).await;
    }
    assert_eq!(
        hook.calls(),
        0,
        "the hook was asked about a refused request"
    );
}

/// Request headers as owned values.
type Headers = Vec<(&'static str, String)>;

#[tokio::test]
async fn credentials_never_appear_in_the_log() {
    let Provider { rsa, jwks, .. } = provider();
    let hook = HookServer::start(HookBehavior::allow());
    let node = Node::builder()
        .config_file(&format!(
            "[server]\nretry = \"{RETRY_MS}ms\"\n\n[log]\nlevel = \"trace\"\n\n\
             [auth]\npublic_topics = [\"public.*\"]\njwt_secret = \"{SECRET}\"\n\
             jwks_url = \"{}\"\nsubscribe_hook_url = \"{}\"\n\
             user_topics = [\"user.{{sub}}\"]\n",
            jwks.url(),
            hook.url()
        ))
        .start()
        .await;
    let jwks_token = rsa.sign_with_kid("rsa-1", &json!({"sub": "42", "exp": unix_now() + 600}));
    let hs256_token = TokenSigner::hs256(SECRET).sign(&subscriber(&["private.*"]));
    let forged = TokenSigner::hs256("forged").sign(&subscriber(&["*"]));
    let opaque = "sess-opaque-5e1f0c2b9d";
    let cookie_value = "cookie-value-8a4e77c1";
    let requests: [(&[&str], Headers); 5] = [
        (&["user.42"], vec![("authorization", bearer(&jwks_token))]),
        (
            &["private.1"],
            vec![("authorization", bearer(&hs256_token))],
        ),
        (&["private.1"], vec![("authorization", bearer(&forged))]),
        (&["private.2"], vec![("authorization", bearer(opaque))]),
        (
            &["private.3"],
            vec![("cookie", format!("session={cookie_value}"))],
        ),
    ];
    for behavior in [HookBehavior::allow(), HookBehavior::Status(500)] {
        hook.set_behavior(behavior);
        for (topics, headers) in &requests {
            // Other topics each round, so the hook is really asked.
            let topics: Vec<String> = topics
                .iter()
                .map(|t| {
                    format!(
                        "{t}{}",
                        if behavior == HookBehavior::allow() {
                            ""
                        } else {
                            ".x"
                        }
                    )
                })
                .collect();
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            node.subscribe_on_both_kinds(&topics_query(&topics), &headers)
                .await;
        }
    }
    // Whatever the node logs about these requests is written by now: the
    // answers were sent after it.
    node.api().get("/healthz").await;
    let log = node.log_text();
    assert!(
        log.lines().count() > 3,
        "the node logged nothing at trace level"
    );
    let signature = |token: &str| token.rsplit('.').next().expect("a JWT").to_owned();
    for (what, secret) in [
        ("a JWKS token", signature(&jwks_token)),
        ("an HS256 token", signature(&hs256_token)),
        ("a forged token", signature(&forged)),
        ("an opaque token", opaque.to_owned()),
        ("a cookie", cookie_value.to_owned()),
        ("the JWT secret", SECRET.to_owned()),
    ] {
        assert!(
            !log.contains(&secret),
            "{what} appears in {}",
            node.log_path().display()
        );
    }
}
