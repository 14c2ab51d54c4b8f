//! Credentials (`herald::auth::Auth`) and CORS (`herald::cors`): no token,
//! header or origin panics; only the configured key or a correctly signed,
//! unexpired JWT is ever accepted, and any change to a valid token that
//! survives the transport's trimming makes it invalid; CORS never echoes an
//! origin it was not given, nor a header value that could split a header.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{http::header::HeaderValue, test::TestRequest};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use herald::{
    auth::{Auth, Checked, Credentials, Refusal},
    cors,
    error::ApiError,
    metrics::Metrics,
};
use herald_broker::Topic;
use herald_fuzz::{auth_settings, config, mutated, seeds, JWT_SECRET, PUBLISH_KEY};
use jsonwebtoken::{EncodingKey, Header};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};
use serde_json::json;

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn auth() -> Auth {
    Auth::new(&auth_settings(), &Metrics::new()).expect("HS256 settings are valid")
}

/// A token the fuzzed node accepts for subscribing to and publishing on
/// anything.
fn valid_token() -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"herald": {"subscribe": ["*"], "publish": ["*"]}, "exp": now() + 3600}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("HS256 tokens encode")
}

fn private() -> Vec<Topic> {
    vec![Topic::new("private.1").expect("a valid topic")]
}

/// Whether `token` is what the protocol (docs/protocol.md, section 6)
/// accepts: HS256 with the node's
/// secret, `exp`/`nbf` (when present) within a 30 s leeway.
fn verifies(token: &str) -> bool {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 30;
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .is_ok_and(|data| {
        // The claim, when present, is an object whose lists are lists of
        // strings; `exp`, when present, is a number of seconds.
        let patterns = |v: &serde_json::Value| {
            v.is_null()
                || v.as_array()
                    .is_some_and(|a| a.iter().all(|p| p.is_string()))
        };
        let herald_ok = match data.claims.get("herald") {
            None => true,
            Some(claim) => {
                claim.is_object()
                    && patterns(&claim["publish"])
                    && patterns(&claim["subscribe"])
                    && !claim.get("publish").is_some_and(|v| v.is_null())
                    && !claim.get("subscribe").is_some_and(|v| v.is_null())
            }
        };
        let exp_ok = data
            .claims
            .get("exp")
            .is_none_or(|exp| exp.as_u64().is_some());
        herald_ok && exp_ok
    })
}

/// How a subscriber token can travel.
fn subscriber_outcome(auth: &Auth, token: &str, place: u8) -> Result<(), ApiError> {
    let mut credentials = Credentials::default();
    match place % 3 {
        0 => credentials.forwarded.authorization = Some(format!("Bearer {token}").into_bytes()),
        1 => credentials.forwarded.cookie = Some(format!("herald_token={token}").into_bytes()),
        _ => credentials.query_token = Some(token.to_owned()),
    }
    // Without a key set to fetch or a hook to call, nothing here waits.
    match futures_executor::block_on(auth.check_subscriber(&credentials, &private())) {
        Ok(Checked::Granted(_)) => Ok(()),
        Ok(Checked::AskHook { .. }) => unreachable!("the fuzzed node has no hook"),
        Err(Refusal::Denied(error)) => Err(error),
        Err(Refusal::Retry) => unreachable!("the fuzzed node fetches no keys"),
    }
}

/// What a transport does to a token before herald reads it: headers are
/// trimmed, cookie values lose surrounding quotes and end at `;`.
fn as_read(token: &str, place: u8) -> &str {
    match place % 3 {
        0 => token.trim(),
        1 => token
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_end()
            .trim_matches('"'),
        _ => token,
    }
}

#[test]
fn the_valid_token_is_accepted_everywhere_and_the_seeds_are_handled() {
    let auth = auth();
    let token = valid_token();
    for place in 0..3 {
        assert!(
            subscriber_outcome(&auth, &token, place).is_ok(),
            "place {place}"
        );
    }
    for seed in seeds("token") {
        let text = String::from_utf8_lossy(&seed);
        for place in 0..3 {
            let _ = subscriber_outcome(&auth, &text, place);
        }
    }
}

/// One change to a token: a byte replaced, inserted or removed, or one of
/// its three parts swapped for another token's.
#[derive(Debug, Clone)]
enum Tamper {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    /// Replace the header with `{"alg": <alg>}`, keeping claims and
    /// signature: algorithm confusion, `none` above all.
    Alg(&'static str, bool),
    /// Re-encode the claims with more rights, keeping the signature.
    Claims,
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let printable = prop_oneof![0x20u8..0x7f, any::<u8>()];
    prop_oneof![
        3 => (any::<usize>(), printable.clone()).prop_map(|(at, b)| Tamper::Set(at, b)),
        2 => (any::<usize>(), printable).prop_map(|(at, b)| Tamper::Insert(at, b)),
        2 => any::<usize>().prop_map(Tamper::Remove),
        1 => (
            proptest::sample::select(&["none", "None", "NONE", "HS384", "HS512", "RS256", "ES256", "EdDSA", ""][..]),
            any::<bool>()
        )
            .prop_map(|(alg, keep)| Tamper::Alg(alg, keep)),
        1 => Just(Tamper::Claims),
    ]
}

fn apply(token: &str, tamper: &Tamper) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let parts: Vec<&str> = token.split('.').collect();
    let part = |n: usize| parts.get(n).copied().unwrap_or_default();
    match *tamper {
        Tamper::Set(at, b) => {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = b;
            }
        }
        Tamper::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
        Tamper::Remove(at) if !bytes.is_empty() => {
            bytes.remove(at % bytes.len());
        }
        Tamper::Remove(_) => {}
        Tamper::Alg(alg, keep_signature) => {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let signature = if keep_signature { part(2) } else { "" };
            return format!("{header}.{}.{signature}", part(1));
        }
        Tamper::Claims => {
            let claims = URL_SAFE_NO_PAD.encode(
                json!({"herald": {"subscribe": ["*"], "publish": ["*"]}, "exp": now() + 7200})
                    .to_string(),
            );
            return format!("{}.{claims}.{}", part(0), part(2));
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn any_change_to_a_valid_token_makes_it_refused() {
    let auth = auth();
    let token = valid_token();
    let inputs = (proptest::collection::vec(tamper(), 1..4), any::<u8>());
    TestRunner::new(config(file!()))
        .run(&inputs, |(tampers, place)| {
            let tampered = tampers
                .iter()
                .fold(token.clone(), |t, change| apply(&t, change));
            let outcome = subscriber_outcome(&auth, &tampered, place);
            if as_read(&tampered, place) == token {
                return Ok(());
            }
            ensure(matches!(outcome, Err(ApiError::Unauthorized(_))), || {
                format!("tampered token {tampered:?} (place {place}) answered {outcome:?}")
            })
        })
        .unwrap();
}

#[test]
fn arbitrary_publisher_credentials_are_refused_unless_they_are_the_key_or_a_valid_jwt() {
    let auth = auth();
    let token = valid_token();
    let scheme = prop_oneof![
        Just(b"Bearer ".to_vec()),
        Just(b"bearer ".to_vec()),
        Just(b"Basic ".to_vec()),
        Just(b"Bearer".to_vec()),
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    let credential = prop_oneof![
        mutated("token"),
        Just(PUBLISH_KEY.as_bytes().to_vec()),
        Just(token.clone().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    TestRunner::new(config(file!()))
        .run(&(scheme, credential), |(scheme, credential)| {
            let value = [scheme.as_slice(), &credential].concat();
            // Values a client cannot send (CR, LF, NUL) never reach herald.
            let Ok(header) = HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let request = TestRequest::default()
                .insert_header(("authorization", header.clone()))
                .to_http_request();
            let outcome = futures_executor::block_on(auth.authenticate_publisher(&request));
            // RFC 6750: `Bearer`, any case, one space, the token (header
            // values are visible ASCII and lose surrounding whitespace).
            let expected_ok = header
                .to_str()
                .ok()
                .and_then(|text| text.split_once(' '))
                .is_some_and(|(scheme, rest)| {
                    let presented = rest.trim();
                    scheme.eq_ignore_ascii_case("bearer")
                        && (presented == PUBLISH_KEY || presented == token || verifies(presented))
                });
            match &outcome {
                Ok(_) => ensure(expected_ok, || {
                    format!(
                        "{:?} accepted as publisher credentials",
                        String::from_utf8_lossy(&value)
                    )
                }),
                Err(ApiError::Unauthorized(_)) => ensure(!expected_ok, || {
                    format!("{:?} refused", String::from_utf8_lossy(&value))
                }),
                Err(other) => Err(TestCaseError::fail(format!(
                    "answered {other:?}; only 401 is allowed"
                ))),
            }
        })
        .unwrap();
}

#[test]
fn an_origin_named_star_gets_the_wildcard_without_credentials() {
    let headers = cors::headers_for(&["*".to_owned()], Some(b"*"));
    assert_eq!(
        headers,
        vec![("access-control-allow-origin", "*".to_owned())]
    );
}

#[test]
fn cors_echoes_only_listed_origins_and_never_a_header_breaking_value() {
    let origins = prop_oneof![
        mutated("origin"),
        Just(b"https://app.example".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..30),
    ];
    let lists = proptest::sample::select(vec![
        vec![],
        vec!["*".to_owned()],
        vec!["https://app.example".to_owned()],
        vec!["https://app.example".to_owned(), "*".to_owned()],
    ]);
    TestRunner::new(config(file!()))
        .run(&(lists, proptest::option::of(origins)), |(allowed, origin)| {
            let headers = cors::headers_for(&allowed, origin.as_deref());
            for (name, value) in &headers {
                ensure(!value.contains(['\r', '\n', '\0']), || {
                    format!("{name}: {value:?} for origin {origin:?}")
                })?;
            }
            let echoed = headers
                .iter()
                .find(|(name, _)| *name == "access-control-allow-origin")
                .map(|(_, value)| value.as_str());
            let credentials = headers
                .iter()
                .any(|(name, value)| *name == "access-control-allow-credentials" && value == "true");
            // Serialized origins are ASCII (hosts in punycode); others get
            // no CORS headers.
            let origin_text = origin
                .as_deref()
                .filter(|o| o.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t'))
                .and_then(|o| std::str::from_utf8(o).ok());
            // `*` in the list is the wildcard, not an origin named `*`.
            let listed = origin_text.is_some_and(|o| o != "*" && allowed.iter().any(|a| a == o));
            let any = allowed.iter().any(|a| a == "*");
            let expected = match (origin_text, listed, any) {
                (Some(o), true, _) if HeaderValue::from_str(o).is_ok() => Some((o, true)),
                (Some(o), false, true) if HeaderValue::from_str(o).is_ok() => Some(("*", false)),
                _ => None,
            };
            let actual = echoed.map(|e| (e, credentials));
            ensure(actual == expected, || {
                format!("allowed {allowed:?}, origin {origin:?}: {headers:?}, expected {expected:?}")
            })
        })
        .unwrap();
}
