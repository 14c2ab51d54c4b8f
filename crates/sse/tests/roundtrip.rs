//! Round trips through herald's encoder and two parsers: our own and the
//! independent `eventsource-stream` crate, so a bug shared by encoder and
//! parser cannot hide.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{stream, StreamExt};
use herald_sse::{encode, Item, Parser};
use proptest::prelude::*;

/// What a spec-compliant client must see: CR and CRLF arrive as LF.
fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn independent_parse(chunks: Vec<Bytes>) -> Vec<eventsource_stream::Event> {
    let body = stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
    futures_executor::block_on(async {
        body.eventsource()
            .map(|event| event.expect("parse"))
            .collect()
            .await
    })
}

fn own_parse(chunks: &[Bytes]) -> Vec<herald_sse::Event> {
    let mut parser = Parser::new();
    let mut items = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut items);
    }
    items
        .into_iter()
        .filter_map(|item| match item {
            Item::Event(event) => Some(event),
            _ => None,
        })
        .collect()
}

fn split_at_points(bytes: &Bytes, points: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(bytes.slice(start..cut));
        start = cut;
    }
    chunks.push(bytes.slice(start..));
    chunks
}

/// Text heavy in the characters that break naive encoders.
fn tricky_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("\r".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\0".to_owned()),
            Just(":".to_owned()),
            Just(" ".to_owned()),
            Just("data: x".to_owned()),
            Just("é✓😀".to_owned()),
            any::<String>(),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_data_arrives_unchanged_through_both_parsers(
        data in tricky_text(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let frame = encode(Some("c-1"), Some("update"), &data).unwrap();
        // Two copies so the second event proves the first one ended cleanly.
        let mut wire = frame.bytes().to_vec();
        wire.extend_from_slice(frame.bytes());
        let wire = Bytes::from(wire);
        let chunks = split_at_points(&wire, &cuts);

        let own = own_parse(&chunks);
        prop_assert_eq!(own.len(), 2);
        for event in &own {
            prop_assert_eq!(&event.data, &normalized(&data));
            prop_assert_eq!(&event.event, "update");
            prop_assert_eq!(&event.id, "c-1");
        }

        let theirs = independent_parse(chunks);
        prop_assert_eq!(theirs.len(), 2);
        for event in &theirs {
            prop_assert_eq!(&event.data, &normalized(&data));
            prop_assert_eq!(&event.event, "update");
            prop_assert_eq!(&event.id, "c-1");
        }
    }

    #[test]
    fn no_id_or_event_value_can_add_a_field_or_an_event(
        id in tricky_text(),
        event in tricky_text(),
        data in "[a-z]{0,8}",
    ) {
        match encode(Some(&id), Some(&event), &data) {
            Err(_) => {
                let has_break = |s: &str| s.contains(['\r', '\n', '\0']);
                prop_assert!(has_break(&id) || has_break(&event));
            }
            Ok(frame) => {
                let chunks = vec![frame.bytes().clone()];
                let theirs = independent_parse(chunks.clone());
                prop_assert_eq!(theirs.len(), 1);
                let expected_type = if event.is_empty() { "message" } else { event.as_str() };
                prop_assert_eq!(&theirs[0].event, expected_type);
                prop_assert_eq!(&theirs[0].id, &id);
                prop_assert_eq!(&theirs[0].data, &data);
                let own = own_parse(&chunks);
                prop_assert_eq!(own.len(), 1);
                prop_assert_eq!(&own[0].id, &id);
            }
        }
    }
}
