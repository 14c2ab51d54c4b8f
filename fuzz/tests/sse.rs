//! The SSE encoder (`herald_sse::encode`, `comment`, and the broker's
//! `SharedEvent::encode` that every delivered event goes through) and the
//! incremental `herald_sse::Parser`.
//!
//! Whatever the id, event type and data, a frame is read back by two
//! independent parsers as exactly one event with those values: no field
//! and no event can be injected. The parser never panics and gives the same
//! items however its input is split.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use herald_broker::{cursor, EventName, Position, SharedEvent, Topic};
use herald_fuzz::{config, mutated, mutated_text, seeds};
use herald_sse::{Event, Item, Parser};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestRunner},
};

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

/// What a browser must see for `data`: CRLF and CR as LF, the rest as is.
fn as_received(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn parse_all(bytes: &[u8]) -> Vec<Item> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(bytes, &mut out);
    out
}

fn parse_split(bytes: &[u8], cuts: &[usize]) -> Vec<Item> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parser = Parser::new();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        parser.feed(&bytes[start..cut], &mut out);
        start = cut;
    }
    out
}

/// The events `eventsource-stream`, an independent implementation of the
/// WHATWG rules, reads from `bytes`, as (id, type, data, has retry).
fn independent_events(bytes: &[u8]) -> Vec<(String, String, String, bool)> {
    let chunks = vec![Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(
        bytes,
    ))];
    futures_executor::block_on(
        futures_util::stream::iter(chunks)
            .eventsource()
            .map(|event| {
                let event = event.expect("eventsource-stream reads herald's frames");
                (event.id, event.event, event.data, event.retry.is_some())
            })
            .collect(),
    )
}

/// One event, read back exactly, by both parsers and whatever the split.
fn assert_one_event(
    frame: &[u8],
    id: Option<&str>,
    event: Option<&str>,
    data: &str,
    cuts: &[usize],
) -> Result<(), TestCaseError> {
    let expected_type = match event {
        None | Some("") => "message",
        Some(name) => name,
    };
    let expected = Event {
        id: id.unwrap_or_default().to_owned(),
        event: expected_type.to_owned(),
        data: as_received(data),
    };
    let ours = parse_all(frame);
    ensure(ours == [Item::Event(expected.clone())], || {
        format!(
            "frame {:?} parsed as {ours:?}, expected one {expected:?}",
            String::from_utf8_lossy(frame)
        )
    })?;
    let split = parse_split(frame, cuts);
    ensure(split == ours, || format!("split at {cuts:?}: {split:?}"))?;
    let theirs = independent_events(frame);
    let wanted = (expected.id, expected.event, expected.data, false);
    ensure(theirs == [wanted.clone()], || {
        format!(
            "eventsource-stream read {:?} as {theirs:?}, expected one {wanted:?}",
            String::from_utf8_lossy(frame)
        )
    })
}

fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,12}",
        2 => ".{0,12}",
        2 => "[a-z]{0,3}(\r|\n|\r\n|\0)[a-z ]{0,3}(data|id|event|retry): ?[a-z0-9]{0,3}",
        1 => mutated_text("event"),
    ]
}

fn data_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ".{0,40}",
        3 => "([a-z: ]{0,4}(\r|\n|\r\n|\0|\u{feff})){0,6}",
        2 => mutated_text("sse-data"),
        1 => "(\n\n(data|id|event|retry): [a-z0-9]{0,4}){1,4}\n\n",
    ]
}

#[test]
fn encoded_frames_carry_exactly_one_event_with_the_given_fields() {
    let inputs = (
        proptest::option::of(field_text()),
        proptest::option::of(field_text()),
        data_text(),
        proptest::collection::vec(any::<usize>(), 0..6),
    );
    TestRunner::new(config(file!()))
        .run(&inputs, |(id, event, data, cuts)| {
            let breaks =
                |s: &Option<String>| s.as_ref().is_some_and(|s| s.contains(['\r', '\n', '\0']));
            let refused = breaks(&id) || breaks(&event);
            match herald_sse::encode(id.as_deref(), event.as_deref(), &data) {
                Err(error) => ensure(refused, || {
                    format!("id {id:?}, event {event:?} refused: {error}")
                }),
                Ok(frame) => {
                    ensure(!refused, || {
                        format!("id {id:?}, event {event:?} with a line break was encoded")
                    })?;
                    assert_one_event(frame.bytes(), id.as_deref(), event.as_deref(), &data, &cuts)?;
                    // The shared body (a multi-topic stream's id line plus
                    // this) is the same event without its id.
                    let body = frame.body();
                    assert_one_event(&body, None, event.as_deref(), &data, &cuts)
                }
            }
        })
        .unwrap();
}

#[test]
fn every_stored_event_is_one_frame_whatever_its_name_and_data() {
    let names = prop_oneof!["[ -~]{1,64}", ".{1,16}", mutated_text("event")];
    let inputs = (
        "[A-Za-z0-9_.:/@~-]{1,200}",
        any::<(u32, u64)>(),
        proptest::option::of(names),
        data_text(),
    );
    TestRunner::new(config(file!()))
        .run(&inputs, |(topic, (epoch, seq), name, data)| {
            let topic = Topic::new(&topic).expect("generated topics are valid");
            let position = Position::new(epoch, if epoch == 0 { 0 } else { seq });
            // Only names the ingest API accepts reach the broker.
            let Some(name) = name.map(|n| EventName::new(&n)).transpose().ok() else {
                return Ok(());
            };
            let stored = SharedEvent::encode(topic.clone(), position, name.as_ref(), &data, 0);
            let id = cursor::encode_one(&topic, position);
            assert_one_event(
                stored.frame.bytes(),
                Some(&id),
                name.as_ref().map(EventName::as_str),
                &data,
                &[],
            )
        })
        .unwrap();
}

#[test]
fn comments_stay_one_comment_line() {
    TestRunner::new(config(file!()))
        .run(&data_text(), |text| {
            let line = herald_sse::comment(&text);
            let items = parse_all(&line);
            let expected = text.replace(['\r', '\n'], " ");
            ensure(items == [Item::Comment(expected.clone())], || {
                format!("comment {text:?} wrote {line:?}, read as {items:?}")
            })
        })
        .unwrap();
}

#[test]
fn every_stream_seed_parses_alike_whole_and_byte_by_byte() {
    for seed in seeds("sse-stream") {
        let cuts: Vec<usize> = (0..seed.len()).collect();
        assert_eq!(
            parse_all(&seed),
            parse_split(&seed, &cuts),
            "{:?}",
            String::from_utf8_lossy(&seed)
        );
    }
}

#[test]
fn the_parser_never_panics_and_ignores_how_input_is_split() {
    let inputs = (
        mutated("sse-stream"),
        proptest::collection::vec(any::<usize>(), 0..12),
    );
    TestRunner::new(config(file!()))
        .run(&inputs, |(bytes, cuts)| {
            let whole = parse_all(&bytes);
            let split = parse_split(&bytes, &cuts);
            ensure(whole == split, || {
                format!(
                    "{:?} split at {cuts:?}: {whole:?} vs {split:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })?;
            // Ids holding NUL are ignored, as browsers do.
            for item in &whole {
                if let Item::Event(event) = item {
                    ensure(!event.id.contains('\0'), || format!("{event:?}"))?;
                }
            }
            Ok(())
        })
        .unwrap();
}
