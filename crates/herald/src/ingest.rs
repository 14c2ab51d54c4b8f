//! Turning publish request bodies into validated [`Message`]s.
//!
//! Everything is checked before anything is published, so a request is
//! either applied whole or rejected whole.

use std::collections::HashSet;

use herald_broker::{EventName, Message, Target, Topic};
use serde::{Deserialize, Deserializer};
use serde_json::{value::RawValue, Value};

use crate::{config::Limits, error::ApiError};

/// Messages in one batch request.
pub const MAX_BATCH: usize = 1000;
/// Topics in one `topics` publish.
pub const MAX_PUBLISH_TOPICS: usize = 100;
/// Bytes of an idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// One publish object, as sent.
#[derive(Debug, Deserialize)]
struct PublishObject {
    topic: Option<String>,
    topics: Option<Vec<String>>,
    // `Some(Value::Null)` for `"data": null`, `None` when absent.
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
    event: Option<String>,
    idempotency_key: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    messages: Option<Vec<&'a RawValue>>,
}

/// Parses the body of `POST /v1/publish`.
///
/// # Errors
///
/// `400` for bad JSON or fields, `413` for data over the payload limit.
pub fn parse_publish(body: &[u8], limits: &Limits) -> Result<Message, ApiError> {
    ensure_object(body, "publish body")?;
    let object: PublishObject = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid publish body: {e}")))?;
    validate(object, limits)
}

/// Insists that `json` is well-formed JSON whose top level is an object.
///
/// Deserializing into a derived struct refuses duplicate fields (good) but
/// also reads an array field by field, and skips members it does not know
/// without checking their text (invalid UTF-8, lone surrogates). A full
/// parse first rejects both; the struct then adds the duplicate check.
fn ensure_object(json: &[u8], what: &str) -> Result<(), ApiError> {
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))?;
    if value.is_object() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "the {what} must be a JSON object"
        )))
    }
}

/// Parses the body of `POST /v1/publish/batch`.
///
/// # Errors
///
/// `400` or `413` naming the 0-based index of the first bad message; `413`
/// for more than [`MAX_BATCH`] messages.
pub fn parse_batch(body: &[u8], limits: &Limits) -> Result<Vec<Message>, ApiError> {
    ensure_object(body, "batch body")?;
    let batch: BatchBody<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid batch body: {e}")))?;
    let messages = batch
        .messages
        .ok_or_else(|| ApiError::BadRequest("\"messages\" is required".into()))?;
    if messages.is_empty() {
        return Err(ApiError::BadRequest(
            "\"messages\" must hold 1 to 1000 messages".into(),
        ));
    }
    if messages.len() > MAX_BATCH {
        return Err(ApiError::TooLarge(format!(
            "{} messages in one batch; at most {MAX_BATCH} are allowed",
            messages.len()
        )));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            if !raw.get().starts_with('{') {
                let error = ApiError::BadRequest("must be a JSON object".into());
                return Err(at_index(index, error));
            }
            let object: PublishObject = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::BadRequest(format!("messages[{index}]: {e}")))?;
            validate(object, limits).map_err(|e| at_index(index, e))
        })
        .collect()
}

fn at_index(index: usize, error: ApiError) -> ApiError {
    match error {
        ApiError::BadRequest(detail) => {
            ApiError::BadRequest(format!("messages[{index}]: {detail}"))
        }
        ApiError::TooLarge(detail) => ApiError::TooLarge(format!("messages[{index}]: {detail}")),
        other => other,
    }
}

fn validate(object: PublishObject, limits: &Limits) -> Result<Message, ApiError> {
    let target = match (object.topic, object.topics) {
        (Some(topic), None) => Target::One(topic_named(&topic)?),
        (None, Some(names)) => Target::Many(topic_list(&names)?),
        _ => {
            return Err(ApiError::BadRequest(
                "exactly one of \"topic\" or \"topics\" is required".into(),
            ))
        }
    };
    let data = match object.data {
        None => return Err(ApiError::BadRequest("\"data\" is required".into())),
        Some(Value::String(text)) => text,
        Some(value) => value.to_string(),
    };
    if data.len() > limits.max_payload_bytes {
        return Err(ApiError::TooLarge(format!(
            "data is {} bytes; the limit is {}",
            data.len(),
            limits.max_payload_bytes
        )));
    }
    let event = object
        .event
        .map(|name| EventName::new(&name).map_err(|e| ApiError::BadRequest(format!("event: {e}"))))
        .transpose()?;
    let idempotency_key = object.idempotency_key;
    if let Some(key) = &idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(ApiError::BadRequest(format!(
                "idempotency_key is {} bytes; it must be 1 to {MAX_IDEMPOTENCY_KEY}",
                key.len()
            )));
        }
    }
    Ok(Message {
        target,
        event,
        data,
        idempotency_key,
    })
}

fn topic_named(name: &str) -> Result<Topic, ApiError> {
    Topic::new(name).map_err(|e| ApiError::BadRequest(format!("topic {name:?}: {e}")))
}

fn topic_list(names: &[String]) -> Result<Vec<Topic>, ApiError> {
    if names.is_empty() || names.len() > MAX_PUBLISH_TOPICS {
        return Err(ApiError::BadRequest(format!(
            "\"topics\" holds {} names; it must hold 1 to {MAX_PUBLISH_TOPICS}",
            names.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let topic = topic_named(name)?;
        if seen.insert(topic.clone()) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_payload_bytes: 16,
        max_request_bytes: 1024,
        max_topics_per_connection: 64,
        client_buffer_events: 16,
    };

    fn publish(body: &str) -> Result<Message, ApiError> {
        parse_publish(body.as_bytes(), &LIMITS)
    }

    #[test]
    fn json_data_is_compact_with_order_and_numbers_kept() {
        let body =
            r#"{"topic":"t","data":{ "b": 1, "a": [1.50, 12345678901234567890123] , "é": "✓"}}"#;
        let limits = Limits {
            max_payload_bytes: 1024,
            ..LIMITS
        };
        let m = parse_publish(body.as_bytes(), &limits).unwrap();
        assert_eq!(
            m.data,
            r#"{"b":1,"a":[1.50,12345678901234567890123],"é":"✓"}"#
        );
    }

    #[test]
    fn null_data_is_published_as_null_and_missing_data_is_refused() {
        assert_eq!(
            publish(r#"{"topic":"t","data":null}"#).unwrap().data,
            "null"
        );
        assert!(matches!(
            publish(r#"{"topic":"t"}"#),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn payload_limit_counts_utf8_bytes() {
        assert!(publish(r#"{"topic":"t","data":"éééééééé"}"#).is_ok());
        assert!(matches!(
            publish(r#"{"topic":"t","data":"ééééééééé"}"#),
            Err(ApiError::TooLarge(_))
        ));
    }

    #[test]
    fn exactly_one_of_topic_and_topics() {
        assert!(publish(r#"{"data":1}"#).is_err());
        assert!(publish(r#"{"topic":"a","topics":["b"],"data":1}"#).is_err());
        let m = publish(r#"{"topics":["a","b","a"],"data":1}"#).unwrap();
        assert_eq!(m.target.topics().len(), 2);
    }

    #[test]
    fn bad_event_names_are_refused() {
        for event in [r#""a\nb""#, r#""""#, r#""herald.x""#, r#""a\u0000""#] {
            let body = format!(r#"{{"topic":"t","data":1,"event":{event}}}"#);
            assert!(
                matches!(publish(&body), Err(ApiError::BadRequest(_))),
                "{event}"
            );
        }
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let publish_body = r#"{"topic":"a","topic":"b","data":1}"#;
        assert!(matches!(
            publish(publish_body),
            Err(ApiError::BadRequest(_))
        ));
        let batch = r#"{"messages":[{"topic":"a","data":1,"data":2}]}"#;
        assert!(matches!(
            parse_batch(batch.as_bytes(), &LIMITS),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn arrays_are_not_publish_objects() {
        assert!(matches!(
            publish(r#"["t", null, "x", null, null]"#),
            Err(ApiError::BadRequest(_))
        ));
        let batch = r#"{"messages":[["t", null, "x", null, null]]}"#;
        assert!(matches!(
            parse_batch(batch.as_bytes(), &LIMITS),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_batch(b"[[]]", &LIMITS),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn batch_errors_name_the_index() {
        let body = r#"{"messages":[{"topic":"a","data":1},{"topic":"b c","data":1}]}"#;
        let Err(ApiError::BadRequest(detail)) = parse_batch(body.as_bytes(), &LIMITS) else {
            panic!("expected 400");
        };
        assert!(detail.starts_with("messages[1]:"), "{detail}");
        let body = r#"{"messages":[{"topic":"a","data":"this is far too long"}]}"#;
        let Err(ApiError::TooLarge(detail)) = parse_batch(body.as_bytes(), &LIMITS) else {
            panic!("expected 413");
        };
        assert!(detail.starts_with("messages[0]:"), "{detail}");
    }
}
