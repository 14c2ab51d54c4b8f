//! Cluster-mode helpers: several nodes on one Redis, and Redis's own view of
//! what they subscribed to.
//!
//! Tests check herald's subscriptions with Redis's answers (`PUBSUB
//! NUMSUB`, `PUBSUB CHANNELS`, `CLIENT LIST`, `INFO`) rather than with
//! anything herald reports about itself, so a node that miscounts cannot
//! hide a stale or missing subscription. The reply readers take a
//! [`Resp`], so they work with any [`crate::RedisServer`].

use std::collections::BTreeMap;

use futures_util::future::join_all;

use crate::{Node, NodeBuilder, Resp};

/// Starts `count` nodes from `builder` at once (start-up is mostly waiting,
/// so a cluster starts in the time of one node) and returns them in order.
///
/// # Panics
///
/// As [`NodeBuilder::start`].
pub async fn start_nodes(builder: &NodeBuilder, count: usize) -> Vec<Node> {
    join_all((0..count).map(|_| builder.clone().start())).await
}

/// The Redis pub/sub channel carrying `topic`'s live events
/// (`herald:{<topic>}:live`): one subscription per node with local
/// subscribers of the topic.
pub fn live_channel(topic: &str) -> String {
    format!("herald:{{{topic}}}:live")
}

/// The text of a bulk-string reply (`INFO`, `CLIENT LIST`).
///
/// # Panics
///
/// When the reply is not a bulk string.
pub fn reply_text(reply: &Resp) -> String {
    match reply {
        Resp::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

/// An integer reply (`DBSIZE`).
///
/// # Panics
///
/// When the reply is not an integer.
pub fn reply_integer(reply: &Resp) -> i64 {
    match reply {
        Resp::Integer(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// The strings of an array reply (`PUBSUB CHANNELS`), sorted.
///
/// # Panics
///
/// When the reply is not an array of bulk strings.
pub fn reply_strings(reply: &Resp) -> Vec<String> {
    let Resp::Array(Some(items)) = reply else {
        panic!("expected an array, got {reply:?}");
    };
    let mut strings: Vec<String> = items.iter().map(reply_text).collect();
    strings.sort();
    strings
}

/// A `PUBSUB NUMSUB` reply as channel → number of subscribed connections.
///
/// # Panics
///
/// When the reply is not a flat array of channel/count pairs.
pub fn numsub_counts(reply: &Resp) -> BTreeMap<String, i64> {
    let Resp::Array(Some(items)) = reply else {
        panic!("expected an array, got {reply:?}");
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [channel, Resp::Integer(n)] => (reply_text(channel), *n),
            other => panic!("expected a channel and a count, got {other:?}"),
        })
        .collect()
}

/// One `field:value` line of an `INFO` answer.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The connections of a `CLIENT LIST` answer, each as its `key=value`
/// fields (`addr`, `sub`, `cmd`, …).
pub fn client_list(text: &str) -> Vec<BTreeMap<String, String>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.split(' ')
                .filter_map(|field| field.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_into_plain_values() {
        let numsub = Resp::Array(Some(vec![
            Resp::Bulk(Some(b"herald:{a}:live".to_vec())),
            Resp::Integer(2),
        ]));
        assert_eq!(
            numsub_counts(&numsub),
            BTreeMap::from([("herald:{a}:live".to_owned(), 2)])
        );
        assert_eq!(
            info_field(
                "# Stats\r\ntotal_connections_received:7\r\n",
                "total_connections_received"
            ),
            Some("7")
        );
        let clients = client_list("id=3 addr=127.0.0.1:5 sub=1 cmd=subscribe\nid=4 sub=0\n");
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0]["sub"], "1");
        assert_eq!(live_channel("a/b"), "herald:{a/b}:live");
    }
}
