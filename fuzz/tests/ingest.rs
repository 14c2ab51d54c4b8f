//! Publish and batch bodies (`herald::ingest`): no input panics, every
//! refusal is a `400` or `413` problem, and what is accepted is exactly what
//! an independent reading of docs/protocol.md §4 accepts.

use herald::{config::Limits, error::ApiError, ingest};
use herald_broker::{Message, Target};
use herald_fuzz::{config, default_limits, mutated, seeds};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};
use serde_json::{Map, Value};

/// What docs/protocol.md §4 says about one publish object.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Accepted: the topics (deduplicated, in order), event, data, key.
    Accept(Vec<String>, Option<String>, String, Option<String>),
    BadRequest,
    TooLarge,
}

/// The independent reading: written from the contract, not from ingest.rs.
fn judge(object: &Map<String, Value>, limits: &Limits) -> Verdict {
    let text = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    };
    let (Ok(topic), Ok(event), Ok(key)) = (text("topic"), text("event"), text("idempotency_key"))
    else {
        return Verdict::BadRequest;
    };
    let topics = match object.get("topics") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect();
            match names {
                Some(names) => Some(names),
                None => return Verdict::BadRequest,
            }
        }
        Some(_) => return Verdict::BadRequest,
    };
    let valid_topic = |t: &str| {
        (1..=200).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@~".contains(&b))
    };
    let names = match (topic, topics) {
        (Some(topic), None) if valid_topic(&topic) => vec![topic],
        (None, Some(list))
            if (1..=100).contains(&list.len()) && list.iter().all(|t| valid_topic(t)) =>
        {
            let mut unique: Vec<String> = Vec::new();
            for name in list {
                if !unique.contains(&name) {
                    unique.push(name);
                }
            }
            unique
        }
        _ => return Verdict::BadRequest,
    };
    let data = match object.get("data") {
        None => return Verdict::BadRequest,
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if data.len() > limits.max_payload_bytes {
        return Verdict::TooLarge;
    }
    if let Some(event) = &event {
        let bad_char = event.chars().any(|c| (c as u32) < 0x20 || c as u32 == 0x7f);
        if !(1..=64).contains(&event.len()) || bad_char || event.starts_with("herald.") {
            return Verdict::BadRequest;
        }
    }
    if key.as_ref().is_some_and(|k| !(1..=200).contains(&k.len())) {
        return Verdict::BadRequest;
    }
    Verdict::Accept(names, event, data, key)
}

fn verdict_of(message: &Message) -> Verdict {
    Verdict::Accept(
        message
            .target
            .topics()
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        message.event.as_ref().map(|e| e.as_str().to_owned()),
        message.data.clone(),
        message.idempotency_key.clone(),
    )
}

/// Checks a refusal: only the statuses the protocol allows, and a problem
/// body that renders.
fn refusal(error: &ApiError, input: &[u8]) -> Result<Verdict, TestCaseError> {
    let rendered = error.render();
    let body: Value = serde_json::from_str(&rendered.body).expect("problem bodies are JSON");
    ensure(body["status"] == rendered.status.as_u16(), || {
        format!("{body}")
    })?;
    match error {
        ApiError::BadRequest(_) => Ok(Verdict::BadRequest),
        ApiError::TooLarge(_) => Ok(Verdict::TooLarge),
        other => Err(TestCaseError::fail(format!(
            "{:?} refused with {other:?}; only 400 and 413 are allowed",
            String::from_utf8_lossy(input)
        ))),
    }
}

/// A JSON object naming one of the publish fields twice, which serde's
/// derived struct reader refuses (`serde_json::Value` keeps the last one
/// silently, so the oracle cannot tell).
fn has_duplicate_keys(body: &[u8]) -> bool {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    let Ok(Keys(keys)) = serde_json::from_slice::<Keys>(body) else {
        return false;
    };
    ["topic", "topics", "data", "event", "idempotency_key"]
        .iter()
        .any(|field| keys.iter().filter(|k| k == field).count() > 1)
}

fn check_publish(body: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let outcome = ingest::parse_publish(body, limits);
    let actual = match &outcome {
        Ok(message) => {
            if let Target::One(_) = message.target {
                assert_eq!(message.target.topics().len(), 1);
            }
            verdict_of(message)
        }
        Err(error) => refusal(error, body)?,
    };
    let expected = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => judge(&object, limits),
        // Not JSON, or JSON that is not an object: a bad request.
        _ => Verdict::BadRequest,
    };
    ensure(
        actual == expected || (actual == Verdict::BadRequest && has_duplicate_keys(body)),
        || {
            format!(
                "publish body {:?}: herald says {actual:?} ({outcome:?}), the protocol says {expected:?}",
                String::from_utf8_lossy(body)
            )
        },
    )
}

/// Fails the case with `message` unless `condition` holds.
fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

fn check_batch(body: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let outcome = ingest::parse_batch(body, limits);
    let shown = || String::from_utf8_lossy(body).into_owned();
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let messages = parsed
        .as_ref()
        .and_then(|v| v.get("messages"))
        .and_then(Value::as_array);
    match outcome {
        Ok(accepted) => {
            let Some(messages) = messages else {
                return Err(TestCaseError::fail(format!(
                    "batch {:?} accepted without a messages array",
                    shown()
                )));
            };
            ensure((1..=1000).contains(&accepted.len()), shown)?;
            ensure(accepted.len() == messages.len(), shown)?;
            for (message, raw) in accepted.iter().zip(messages) {
                let Some(object) = raw.as_object() else {
                    return Err(TestCaseError::fail(format!(
                        "batch message {raw} accepted but not an object"
                    )));
                };
                let expected = judge(object, limits);
                ensure(verdict_of(message) == expected, || {
                    format!("batch message {raw}: the protocol says {expected:?}")
                })?;
            }
        }
        Err(error) => {
            let verdict = refusal(&error, body)?;
            let detail = error.to_string();
            // When the batch itself is fine, the first bad message is named.
            if let Some(messages) = messages.filter(|m| (1..=1000).contains(&m.len())) {
                let first_bad = messages.iter().position(|m| match m {
                    Value::Object(object) => !matches!(judge(object, limits), Verdict::Accept(..)),
                    _ => true,
                });
                if let Some(index) = first_bad {
                    ensure(detail.starts_with(&format!("messages[{index}]")), || {
                        format!(
                            "batch {:?}: detail {detail:?} does not name message {index}",
                            shown()
                        )
                    })?;
                }
            } else if messages.is_some_and(|m| m.len() > 1000) {
                ensure(verdict == Verdict::TooLarge, || detail.clone())?;
            }
        }
    }
    Ok(())
}

/// Small limits make the 413 path reachable from small inputs.
fn small_limits() -> Limits {
    Limits {
        max_payload_bytes: 16,
        ..default_limits()
    }
}

#[test]
fn every_publish_seed_is_judged_as_the_contract_says() {
    for seed in seeds("publish") {
        check_publish(&seed, &default_limits()).unwrap();
        check_publish(&seed, &small_limits()).unwrap();
    }
}

#[test]
fn mutated_publish_bodies_never_panic_and_match_the_contract() {
    TestRunner::new(config(file!()))
        .run(&mutated("publish"), |body| {
            check_publish(&body, &default_limits())?;
            check_publish(&body, &small_limits())
        })
        .unwrap();
}

/// Publish objects built field by field, so every combination of present,
/// null, wrongly typed and hostile fields is reached, not only those near a
/// seed.
fn publish_object() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        "[A-Za-z0-9_.:/@~-]{1,12}",
        "herald\\.[a-z]{0,4}",
        ".{0,6}",
        "[\\x00-\\x1f\\x7f]{1,3}",
        "e{60,70}",
        "é{30,34}",
    ];
    let field = prop_oneof![
        3 => name.clone().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
        1 => proptest::collection::vec(name.clone().prop_map(Value::String), 0..4).prop_map(Value::Array),
    ];
    let data = prop_oneof![
        ".{0,24}".prop_map(Value::String),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        Just(Value::Null),
        proptest::collection::vec(".{0,4}".prop_map(Value::String), 0..4).prop_map(Value::Array),
    ];
    (
        proptest::option::of(field.clone()),
        proptest::option::of(field.clone()),
        proptest::option::of(data),
        proptest::option::of(field.clone()),
        proptest::option::of(field),
    )
        .prop_map(|(topic, topics, data, event, key)| {
            let mut object = Map::new();
            for (k, v) in [
                ("topic", topic),
                ("topics", topics),
                ("data", data),
                ("event", event),
                ("idempotency_key", key),
            ] {
                if let Some(v) = v {
                    object.insert(k.to_owned(), v);
                }
            }
            Value::Object(object)
        })
}

#[test]
fn generated_publish_objects_match_the_contract() {
    TestRunner::new(config(file!()))
        .run(&publish_object(), |object| {
            let body = object.to_string();
            check_publish(body.as_bytes(), &default_limits())?;
            check_publish(body.as_bytes(), &small_limits())
        })
        .unwrap();
}

#[test]
fn every_batch_seed_is_judged_as_the_contract_says() {
    for seed in seeds("batch") {
        check_batch(&seed, &default_limits()).unwrap();
    }
}

#[test]
fn mutated_and_generated_batches_never_panic_and_name_the_bad_message() {
    let generated = proptest::collection::vec(publish_object(), 0..6).prop_map(|messages| {
        serde_json::json!({ "messages": messages })
            .to_string()
            .into_bytes()
    });
    let inputs = prop_oneof![mutated("batch"), generated];
    TestRunner::new(config(file!()))
        .run(&inputs, |body| {
            check_batch(&body, &default_limits())?;
            check_batch(&body, &small_limits())
        })
        .unwrap();
}

#[test]
fn a_json_array_is_not_a_publish_object() {
    let positional = br#"["orders.1",null,"data",null,null]"#;
    assert!(
        matches!(
            ingest::parse_publish(positional, &default_limits()),
            Err(ApiError::BadRequest(_))
        ),
        "a publish body that is an array must be a 400"
    );
    let batch = br#"{"messages":[["orders.1",null,"data",null,null]]}"#;
    assert!(
        matches!(
            ingest::parse_batch(batch, &default_limits()),
            Err(ApiError::BadRequest(_))
        ),
        "a batch message that is an array must be a 400"
    );
}

#[test]
fn bad_text_in_an_ignored_member_is_refused() {
    for body in [
        &b"{\"topic\":\"t\",\"data\":1,\"note\":\"\x80\"}"[..],
        br#"{"topic":"t","data":1,"note":"\ud800"}"#,
    ] {
        assert!(
            matches!(
                ingest::parse_publish(body, &default_limits()),
                Err(ApiError::BadRequest(_))
            ),
            "{:?} is not JSON and must be a 400",
            String::from_utf8_lossy(body)
        );
    }
}
