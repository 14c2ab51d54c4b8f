//! Who may publish and who may subscribe to what (docs/protocol.md §6): API keys
//! and JWTs for publishers, JWTs from a header, a cookie or the query for
//! subscribers, `exp`/`nbf` with a 30 s leeway, topic patterns, public
//! topics, RS256/ES256 keys, streams closed at token expiry, tokens kept
//! out of logs, and the warning for an open node on a public address.

use std::time::Duration;

use herald_testkit::{
    eventually, unix_now, unsigned_token, Api, Node, Reply, TokenSigner, TIMEOUT,
};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "auth-test-secret";
const KEY: &str = "publish-key-1";

/// A node with a publish key, a JWT secret, and only `public.*` public.
async fn secured_node() -> Node {
    Node::builder()
        .env(
            "HERALD__AUTH__PUBLISH_KEYS",
            &format!("{KEY},publish-key-2"),
        )
        .env("HERALD__AUTH__JWT_SECRET", SECRET)
        .env("HERALD__AUTH__PUBLIC_TOPICS", "public.*")
        .start()
        .await
}

fn hs256() -> TokenSigner {
    TokenSigner::hs256(SECRET)
}

fn publisher(patterns: &[&str]) -> Value {
    json!({"herald": {"publish": patterns}, "exp": unix_now() + 600})
}

fn subscriber(patterns: &[&str]) -> Value {
    json!({"herald": {"subscribe": patterns}, "exp": unix_now() + 600})
}

async fn publish_with(node: &Node, headers: &[(&str, &str)], body: &Value) -> Reply {
    Reply::send(
        node.api().client(),
        Method::POST,
        &format!("{}/v1/publish", node.url()),
        headers,
        Some(body),
    )
    .await
}

async fn publish_as(node: &Node, credential: &str, topic: &str) -> Reply {
    let header = format!("Bearer {credential}");
    publish_with(
        node,
        &[("authorization", &header)],
        &json!({"topic": topic, "data": "x"}),
    )
    .await
}

async fn publish_ok_with_key(node: &Node, topic: &str, data: &str) {
    let header = format!("Bearer {KEY}");
    let reply = publish_with(
        node,
        &[("authorization", &header)],
        &json!({"topic": topic, "data": data}),
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
}

async fn assert_subscribe_status(node: &Node, query: &str, headers: &[(&str, &str)], status: u16) {
    for (label, reply) in node.subscribe_on_both_kinds(query, headers).await {
        if status == 200 {
            assert_eq!(
                reply.status, 200,
                "{query} {headers:?} on {label}: {reply:?}"
            );
        } else {
            reply.assert_problem(status);
            if status == 401 {
                assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{label}");
            }
        }
    }
}

// ---- publishers ------------------------------------------------------------

#[tokio::test]
async fn publish_without_credentials_is_401_and_stores_nothing() {
    let node = secured_node().await;
    let reply = node.api().publish(&json!({"topic": "t", "data": 1})).await;
    reply.assert_problem(401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let reply = node
        .api()
        .publish_batch(&json!({"messages": [{"topic": "t", "data": 1}]}))
        .await;
    reply.assert_problem(401);
    assert_eq!(node.api().history_length("t").await, 0);
}

#[tokio::test]
async fn every_configured_api_key_publishes_and_a_wrong_one_is_401() {
    let node = secured_node().await;
    let mut stream = node.subscribe(&["public.t"]).await;
    for key in [KEY, "publish-key-2"] {
        let reply = publish_as(&node, key, "public.t").await;
        assert_eq!(reply.status, 202, "{key}: {reply:?}");
    }
    assert_eq!(stream.events(2, TIMEOUT).await.len(), 2);
    for wrong in [
        "publish-key-3",
        "publish-key-",
        "publish-key-1x",
        "PUBLISH-KEY-1",
        "x",
    ] {
        publish_as(&node, wrong, "public.t")
            .await
            .assert_problem(401);
    }
    assert_eq!(node.api().history_length("public.t").await, 2);
}

#[tokio::test]
async fn a_publish_key_anywhere_but_a_bearer_header_is_401() {
    let node = secured_node().await;
    let body = json!({"topic": "t", "data": 1});
    let bearer_typos = [
        KEY.to_owned(),
        format!("Basic {KEY}"),
        format!("Token {KEY}"),
        format!("Bearer: {KEY}"),
        format!("Bearer{KEY}"),
        format!("Bearer={KEY}"),
        format!("Bear {KEY}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
    ];
    for value in &bearer_typos {
        let reply = publish_with(&node, &[("authorization", value)], &body).await;
        reply.assert_problem(401);
    }
    let cookie = format!("herald_token={KEY}");
    for (name, value) in [
        ("x-api-key", KEY),
        ("api-key", KEY),
        ("cookie", cookie.as_str()),
        ("proxy-authorization", &format!("Bearer {KEY}")),
    ] {
        let reply = publish_with(&node, &[(name, value)], &body).await;
        reply.assert_problem(401);
    }
    for query in ["access_token", "api_key", "key", "token"] {
        let url = format!("{}/v1/publish?{query}={KEY}", node.url());
        let reply = Reply::send(node.api().client(), Method::POST, &url, &[], Some(&body)).await;
        reply.assert_problem(401);
    }
    assert_eq!(node.api().history_length("t").await, 0);
}

#[tokio::test]
async fn publish_jwt_covers_its_patterns_only() {
    let node = secured_node().await;
    let token = hs256().sign(&publisher(&["orders.*", "audit"]));
    for topic in ["orders.1", "orders.", "audit"] {
        let reply = publish_as(&node, &token, topic).await;
        assert_eq!(reply.status, 202, "{topic}: {reply:?}");
    }
    for topic in ["audit.1", "order", "users.1", "public.x"] {
        let detail = publish_as(&node, &token, topic)
            .await
            .assert_problem(403)
            .to_owned();
        assert!(detail.contains(topic), "{detail}");
    }
    // One uncovered topic refuses the whole request.
    let header = format!("Bearer {token}");
    let reply = publish_with(
        &node,
        &[("authorization", &header)],
        &json!({"topics": ["orders.2", "users.2"], "data": 1}),
    )
    .await;
    reply.assert_problem(403);
    let batch = json!({"messages": [
        {"topic": "orders.3", "data": 1},
        {"topic": "users.3", "data": 1},
    ]});
    let url = format!("{}/v1/publish/batch", node.url());
    let reply = Reply::send(
        node.api().client(),
        Method::POST,
        &url,
        &[("authorization", &header)],
        Some(&batch),
    )
    .await;
    reply.assert_problem(403);
    for topic in ["orders.2", "users.2", "orders.3", "users.3"] {
        assert_eq!(node.api().history_length(topic).await, 0, "{topic}");
    }
    // A subscriber's token grants no publishing.
    let subscriber_token = hs256().sign(&subscriber(&["*"]));
    publish_as(&node, &subscriber_token, "orders.1")
        .await
        .assert_problem(403);
}

/// Tokens signed with the node's secret whose times or algorithm make them
/// invalid, or valid thanks to the 30 s leeway.
fn timed_tokens(claim: &str) -> Vec<(&'static str, String, u16)> {
    let now = unix_now();
    let herald = json!({ claim: ["*"] });
    let signer = hs256();
    let with = |extra: Value| {
        let mut claims = json!({ "herald": herald });
        for (k, v) in extra.as_object().expect("an object") {
            claims[k] = v.clone();
        }
        claims
    };
    vec![
        ("no exp", signer.sign(&with(json!({}))), 200),
        (
            "exp in an hour",
            signer.sign(&with(json!({"exp": now + 3600}))),
            200,
        ),
        (
            "exp 10 s ago, within the leeway",
            signer.sign(&with(json!({"exp": now - 10}))),
            200,
        ),
        (
            "exp 2 min ago, past the leeway",
            signer.sign(&with(json!({"exp": now - 120}))),
            401,
        ),
        (
            "nbf in 2 min",
            signer.sign(&with(json!({"nbf": now + 120, "exp": now + 3600}))),
            401,
        ),
        (
            "nbf in 10 s, within the leeway",
            signer.sign(&with(json!({"nbf": now + 10}))),
            200,
        ),
        (
            "signed with another secret",
            TokenSigner::hs256("not-the-secret").sign(&with(json!({}))),
            401,
        ),
        ("alg none", unsigned_token(&with(json!({}))), 401),
        (
            "alg none keeping a valid signature",
            {
                let valid = signer.sign(&with(json!({})));
                let (_, rest) = valid.split_once('.').expect("a JWT");
                let none = unsigned_token(&json!({}));
                format!("{}.{rest}", none.split('.').next().expect("a header"))
            },
            401,
        ),
        (
            "HS512 header over an HS256 signature",
            signer.sign_with_header(&json!({"alg": "HS512", "typ": "JWT"}), &with(json!({}))),
            401,
        ),
        (
            "claims changed after signing",
            {
                let valid = signer.sign(&with(json!({"exp": now - 120})));
                let parts: Vec<&str> = valid.split('.').collect();
                let claims = herald_testkit::base64url(
                    with(json!({"exp": now + 3600})).to_string().as_bytes(),
                );
                format!("{}.{claims}.{}", parts[0], parts[2])
            },
            401,
        ),
        ("not a JWT", "not.a.jwt".to_owned(), 401),
    ]
}

#[tokio::test]
async fn publisher_tokens_are_judged_by_signature_algorithm_exp_and_nbf_with_30s_leeway() {
    let node = secured_node().await;
    for (what, token, status) in timed_tokens("publish") {
        let reply = publish_as(&node, &token, "t").await;
        let status = if status == 200 { 202 } else { status };
        if status == 202 {
            assert_eq!(reply.status, 202, "{what}: {reply:?}");
        } else {
            let detail = reply.assert_problem(status);
            assert!(!detail.is_empty(), "{what}");
        }
    }
}

// ---- subscribers -------------------------------------------------------------

#[tokio::test]
async fn subscriber_tokens_are_judged_by_signature_algorithm_exp_and_nbf_with_30s_leeway() {
    let node = secured_node().await;
    for (what, token, status) in timed_tokens("subscribe") {
        let header = format!("Bearer {token}");
        let auth = [("authorization", header.as_str())];
        let replies = if what.starts_with("exp 10 s ago") {
            // Accepted, then closed at once for expiry; on a reused
            // connection that currently loses the answer, see
            // `a_token_past_exp_within_the_leeway_gets_200_then_a_closed_stream`.
            let url = format!("{}/v1/events?topic=private.1", node.url());
            let client = Api::without_keep_alive(node.url()).client().clone();
            vec![(
                "a new connection",
                Reply::send(&client, Method::GET, &url, &auth, None).await,
            )]
        } else {
            node.subscribe_on_both_kinds("topic=private.1", &auth).await
        };
        for (label, reply) in replies {
            if status == 200 {
                assert_eq!(reply.status, 200, "{what} on {label}: {reply:?}");
            } else {
                reply.assert_problem(status);
            }
        }
    }
}

#[tokio::test]
async fn a_token_past_exp_within_the_leeway_gets_200_then_a_closed_stream() {
    let node = secured_node().await;
    let token = hs256().sign(&json!({"herald": {"subscribe": ["*"]}, "exp": unix_now() - 10}));
    let header = format!("Bearer {token}");
    for (label, client) in node.clients_of_both_kinds().await {
        let mut stream = node
            .subscribe_request()
            .topic("private.1")
            .header("authorization", &header)
            .send_on(&client)
            .await;
        assert_eq!(stream.status(), 200, "{label}");
        stream.expect_closed(TIMEOUT).await;
    }
}

#[tokio::test]
async fn public_topics_need_no_token_and_private_ones_do() {
    let node = secured_node().await;
    assert_subscribe_status(&node, "topic=public.news", &[], 200).await;
    assert_subscribe_status(&node, "topic=private.1", &[], 401).await;
    assert_subscribe_status(&node, "topic=public.news&topic=private.1", &[], 401).await;
    // Not a valid token for a public topic: ignored, since none is needed.
    assert_subscribe_status(
        &node,
        "topic=public.news",
        &[("authorization", "Bearer garbage")],
        200,
    )
    .await;
}

#[tokio::test]
async fn a_subscriber_token_is_read_from_the_header_the_cookie_or_the_query() {
    let node = secured_node().await;
    let token = hs256().sign(&subscriber(&["private.*"]));
    let header = format!("Bearer {token}");
    let cookie = format!("theme=dark; herald_token={token}; other=1");
    let query = format!("topic=private.1&access_token={token}");
    assert_subscribe_status(&node, "topic=private.1", &[("authorization", &header)], 200).await;
    assert_subscribe_status(&node, "topic=private.1", &[("cookie", &cookie)], 200).await;
    assert_subscribe_status(&node, &query, &[], 200).await;

    // And the stream it opens carries the topic's events.
    let mut stream = node
        .subscribe_request()
        .topic("private.1")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(stream.status(), 200);
    publish_ok_with_key(&node, "private.1", "secret").await;
    assert_eq!(stream.event().await.data, "secret");
}

#[tokio::test]
async fn a_token_not_covering_every_topic_is_403() {
    let node = secured_node().await;
    let token = hs256().sign(&subscriber(&["user.42", "team.7.*"]));
    let header = format!("Bearer {token}");
    let auth = [("authorization", header.as_str())];
    assert_subscribe_status(&node, "topic=user.42&topic=team.7.chat", &auth, 200).await;
    assert_subscribe_status(&node, "topic=user.42&topic=public.x", &auth, 200).await;
    for query in [
        "topic=user.43",
        "topic=user.42&topic=user.43",
        "topic=user.4",
        "topic=team.7",
        "topic=team.8.chat",
    ] {
        for (label, reply) in node.subscribe_on_both_kinds(query, &auth).await {
            let detail = reply.assert_problem(403);
            assert!(
                !detail.contains(&token),
                "{label}: the token leaked into {detail}"
            );
        }
    }
}

#[tokio::test]
async fn query_tokens_are_refused_when_auth_query_token_is_off() {
    let node = Node::builder()
        .env("HERALD__AUTH__JWT_SECRET", SECRET)
        .env("HERALD__AUTH__PUBLIC_TOPICS", "public.*")
        .env("HERALD__AUTH__QUERY_TOKEN", "false")
        .start()
        .await;
    let token = hs256().sign(&subscriber(&["*"]));
    assert_subscribe_status(
        &node,
        &format!("topic=private.1&access_token={token}"),
        &[],
        401,
    )
    .await;
    let header = format!("Bearer {token}");
    assert_subscribe_status(&node, "topic=private.1", &[("authorization", &header)], 200).await;
}

#[tokio::test]
async fn a_query_token_never_appears_in_the_log() {
    let node = Node::builder()
        .env("HERALD__AUTH__JWT_SECRET", SECRET)
        .env("HERALD__AUTH__PUBLIC_TOPICS", "public.*")
        .env("HERALD__LOG__LEVEL", "trace")
        .start()
        .await;
    let accepted = hs256().sign(&subscriber(&["private.*"]));
    let expired = hs256().sign(&json!({"herald": {"subscribe": ["*"]}, "exp": unix_now() - 300}));
    let forbidden = hs256().sign(&subscriber(&["other.*"]));
    let mut open = Vec::new();
    for token in [&accepted, &expired, &forbidden] {
        let query = format!("topic=private.1&access_token={token}");
        node.subscribe_on_both_kinds(&query, &[]).await;
        open.push(
            node.subscribe_request()
                .topic("private.1")
                .query("access_token", token)
                .send()
                .await,
        );
    }
    // Whatever the node logs about these requests is written by now: the
    // answers were sent after it.
    node.api().get("/healthz").await;
    let log = node.log_text();
    assert!(
        log.lines().count() > 3,
        "the node logged nothing at trace level"
    );
    for token in [&accepted, &expired, &forbidden] {
        let signature = token.rsplit('.').next().expect("a JWT");
        assert!(
            !log.contains(signature),
            "a query token appears in {}",
            node.log_path().display()
        );
    }
}

async fn counter(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    node.api()
        .metrics()
        .await
        .value(name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in /metrics"))
}

#[tokio::test]
async fn a_stream_is_closed_when_its_token_expires_on_either_connection_kind() {
    let node = secured_node().await;
    let before = counter(
        &node,
        "herald_disconnects_total",
        &[("reason", "token_expired")],
    )
    .await;
    // The leeway applies to accepting a token, not to how long its stream
    // lives: a token valid for 3 more seconds gets a stream for 3 seconds.
    let token =
        hs256().sign(&json!({"herald": {"subscribe": ["private.*"]}, "exp": unix_now() + 3}));
    let header = format!("Bearer {token}");
    let mut streams = Vec::new();
    for (_, client) in node.clients_of_both_kinds().await {
        let stream = node
            .subscribe_request()
            .topic("private.1")
            .header("authorization", &header)
            .send_on(&client)
            .await;
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let long_lived = hs256().sign(&subscriber(&["private.*"]));
    let mut other = node
        .subscribe_request()
        .topic("private.1")
        .header("authorization", &format!("Bearer {long_lived}"))
        .send()
        .await;
    for stream in &mut streams {
        stream.expect_closed(Duration::from_secs(3) + TIMEOUT).await;
    }
    // Only the expired streams were closed.
    publish_ok_with_key(&node, "private.1", "still here").await;
    assert_eq!(other.event().await.data, "still here");
    let closed = eventually(TIMEOUT, "token_expired disconnects", || async {
        let now = counter(
            &node,
            "herald_disconnects_total",
            &[("reason", "token_expired")],
        )
        .await;
        (now >= before + 2.0).then_some(now)
    })
    .await;
    assert!(closed >= 2.0, "{closed}");
}

async fn assert_key_pair_tokens(signer: TokenSigner) {
    let key_file = signer
        .public_key_file()
        .expect("a key pair")
        .to_str()
        .expect("UTF-8 path")
        .to_owned();
    let node = Node::builder()
        .env("HERALD__AUTH__JWT_PUBLIC_KEY_FILE", &key_file)
        .env("HERALD__AUTH__PUBLIC_TOPICS", "public.*")
        .start()
        .await;
    let alg = signer.alg();
    let header = format!("Bearer {}", signer.sign(&subscriber(&["private.*"])));
    assert_subscribe_status(&node, "topic=private.1", &[("authorization", &header)], 200).await;
    let publish_token = signer.sign(&publisher(&["private.*"]));
    let reply = publish_as(&node, &publish_token, "private.1").await;
    assert_eq!(reply.status, 202, "{alg} publisher: {reply:?}");
    publish_as(&node, &publish_token, "other")
        .await
        .assert_problem(403);

    let expired = signer.sign(&json!({"herald": {"subscribe": ["*"]}, "exp": unix_now() - 120}));
    // The classic confusion attack: HS256 keyed with the public key's PEM.
    let pem = std::fs::read_to_string(&key_file).expect("reading the public key");
    let confused = TokenSigner::hs256(&pem).sign(&subscriber(&["*"]));
    let other_key = if alg == "RS256" {
        TokenSigner::rs256()
    } else {
        TokenSigner::es256()
    };
    for (what, token) in [
        ("expired", expired),
        ("HS256 with the public key as secret", confused),
        (
            "signed with another key",
            other_key.sign(&subscriber(&["*"])),
        ),
        ("alg none", unsigned_token(&subscriber(&["*"]))),
        (
            "an HS256 token (no secret configured)",
            hs256().sign(&subscriber(&["*"])),
        ),
    ] {
        let header = format!("Bearer {token}");
        for (label, reply) in &node
            .subscribe_on_both_kinds("topic=private.1", &[("authorization", &header)])
            .await
        {
            assert_eq!(reply.status, 401, "{alg}, {what}, on {label}: {reply:?}");
        }
    }
}

#[tokio::test]
async fn rs256_tokens_verify_against_the_configured_public_key() {
    assert_key_pair_tokens(TokenSigner::rs256()).await;
}

#[tokio::test]
async fn es256_tokens_verify_against_the_configured_public_key() {
    assert_key_pair_tokens(TokenSigner::es256()).await;
}

// ---- safe defaults -----------------------------------------------------------

const OPEN_WARNING: &str = "publishing is open to anyone who can reach this address";

#[tokio::test]
async fn an_open_node_on_a_public_address_warns_loudly_and_one_on_loopback_does_not() {
    let exposed = Node::builder()
        .env("HERALD__SERVER__BIND", "0.0.0.0:0")
        .start()
        .await;
    let warning = exposed
        .log_text()
        .lines()
        .find(|line| line.contains(OPEN_WARNING))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no warning in {}", exposed.log_path().display()));
    assert!(warning.contains(r#""level":"WARN""#), "{warning}");
    assert!(warning.contains("auth.publish_keys"), "{warning}");

    let loopback = Node::start().await;
    assert!(!loopback.log_text().contains(OPEN_WARNING));
    let secured = Node::builder()
        .env("HERALD__SERVER__BIND", "0.0.0.0:0")
        .env("HERALD__AUTH__PUBLISH_KEYS", KEY)
        .start()
        .await;
    assert!(!secured.log_text().contains(OPEN_WARNING));
}
