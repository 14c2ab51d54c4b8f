//! One Redis subscription per topic per node (README, "How it works"), as Redis sees
//! it: however clients come and go, and however many share a topic, each
//! node holds exactly one subscription to each topic it has local
//! subscribers for, and none to any other.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use futures_util::future::join_all;
use herald_testkit::{
    client_list, info_field, live_channel, numsub_counts, reply_strings, reply_text, start_nodes,
    Item, Node, RedisServer, SseStream, TIMEOUT,
};
use serde_json::json;

const TOPICS: usize = 20;
const STREAMS_PER_ROUND: usize = 200;
const ROUNDS: usize = 5;

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn topic(i: usize) -> String {
    format!("churn.{i}")
}

/// A stream with the node it is on and its topics.
struct Client {
    node: usize,
    topics: Vec<String>,
    stream: SseStream,
}

/// Opens a stream and checks the node took it (a refused stream gets `200`
/// too, but only a `retry:` and a comment before the connection closes).
async fn open(nodes: &[Node], node: usize, topics: Vec<String>) -> Client {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut stream = nodes[node].subscribe(&names).await;
    assert_eq!(stream.status(), 200);
    assert!(matches!(stream.next_item(TIMEOUT).await, Item::Retry(_)));
    let opened = stream.next_item(TIMEOUT).await;
    assert!(
        matches!(&opened, Item::Comment(c) if c.contains("herald stream open")),
        "node {node} refused a stream on {topics:?}: {opened:?}"
    );
    Client {
        node,
        topics,
        stream,
    }
}

fn pick_topics(rng: &mut Lcg) -> Vec<String> {
    let count = 1 + rng.below(3);
    let set: BTreeSet<usize> = (0..count).map(|_| rng.below(TOPICS)).collect();
    set.into_iter().map(topic).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_and_leaves_leave_exactly_one_redis_subscription_per_node_and_topic() {
    let redis = RedisServer::start().await;
    let nodes = start_nodes(&Node::builder().env("HERALD__REDIS__URL", &redis.url()), 3).await;
    let mut rng = Lcg(7);
    let mut clients: Vec<Client> = Vec::new();
    for round in 0..=ROUNDS {
        // About two thirds of the open streams leave while a new round
        // joins the same topics, and some of the newcomers leave again at
        // once. In the last round nearly everyone leaves and a few join,
        // so topics end up with subscribers on none, some or all nodes.
        let last = round == ROUNDS;
        let (leave_one_in, joining) = if last {
            (20, 12)
        } else {
            (3, STREAMS_PER_ROUND)
        };
        let (leaving, staying): (Vec<Client>, Vec<Client>) = clients
            .into_iter()
            .partition(|_| rng.below(leave_one_in) != 0);
        let plans: Vec<(usize, Vec<String>, bool)> = (0..joining)
            .map(|i| (i % nodes.len(), pick_topics(&mut rng), rng.below(4) == 0))
            .collect();
        let leave = tokio::spawn(async move {
            for client in leaving {
                drop(client);
                tokio::task::yield_now().await;
            }
        });
        let joined = join_all(plans.into_iter().map(|(node, topics, flap)| {
            let nodes = &nodes;
            async move {
                let client = open(nodes, node, topics).await;
                (!flap).then_some(client)
            }
        }))
        .await;
        leave.await.expect("dropping streams does not panic");
        clients = staying
            .into_iter()
            .chain(joined.into_iter().flatten())
            .collect();
    }

    // Which nodes still have local subscribers of each topic.
    let mut expected: BTreeMap<String, BTreeSet<usize>> =
        (0..TOPICS).map(|i| (topic(i), BTreeSet::new())).collect();
    for client in &clients {
        for t in &client.topics {
            expected
                .get_mut(t)
                .expect("known topic")
                .insert(client.node);
        }
    }
    let want_numsub: BTreeMap<String, i64> = expected
        .iter()
        .map(|(t, nodes)| (live_channel(t), nodes.len() as i64))
        .collect();
    let mut want_channels: Vec<String> = expected
        .iter()
        .filter(|(_, nodes)| !nodes.is_empty())
        .map(|(t, _)| live_channel(t))
        .collect();
    want_channels.sort();
    let spread: Vec<usize> = expected.values().map(BTreeSet::len).collect();
    eprintln!("nodes subscribed per topic at the end: {spread:?}");
    let channels: Vec<String> = want_numsub.keys().cloned().collect();
    let mut numsub_args = vec!["PUBSUB", "NUMSUB"];
    numsub_args.extend(channels.iter().map(String::as_str));
    let mut last_seen = (BTreeMap::new(), Vec::new());
    let settled = tokio::time::timeout(TIMEOUT, async {
        loop {
            let numsub = numsub_counts(&redis.command(&numsub_args).await);
            let listed = reply_strings(&redis.command(&["PUBSUB", "CHANNELS", "herald:*"]).await);
            if numsub == want_numsub && listed == want_channels {
                return;
            }
            last_seen = (numsub, listed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "Redis subscriptions did not settle on one per node and topic:\n\
         want NUMSUB {want_numsub:?}\n got {:?}\nwant CHANNELS {want_channels:?}\n got {:?}",
        last_seen.0,
        last_seen.1
    );

    // And every remaining stream is still served, on every topic it holds.
    for i in 0..TOPICS {
        nodes[i % nodes.len()]
            .api()
            .publish_ok(&topic(i), json!(format!("final {}", topic(i))))
            .await;
    }
    for client in &mut clients {
        let events = client.stream.events(client.topics.len(), TIMEOUT).await;
        let mut got: Vec<String> = events.into_iter().map(|e| e.data).collect();
        got.sort();
        let mut want: Vec<String> = client.topics.iter().map(|t| format!("final {t}")).collect();
        want.sort();
        assert_eq!(got, want, "stream on node {}", client.node);
    }
}

#[tokio::test]
async fn many_local_subscribers_of_a_topic_share_one_redis_subscription() {
    let redis = RedisServer::start().await;
    let node = Node::builder()
        .env("HERALD__REDIS__URL", &redis.url())
        .start()
        .await;
    let clients = |text: &str| {
        info_field(text, "connected_clients")
            .and_then(|n| n.parse::<usize>().ok())
            .expect("INFO clients has connected_clients")
    };
    let mut first = node.subscribe(&["hot"]).await;
    first.next_item(TIMEOUT).await;
    let with_one = clients(&reply_text(&redis.command(&["INFO", "clients"]).await));

    let mut streams = join_all((0..99).map(|_| node.subscribe(&["hot"]))).await;
    streams.push(first);
    let numsub = numsub_counts(
        &redis
            .command(&["PUBSUB", "NUMSUB", &live_channel("hot")])
            .await,
    );
    assert_eq!(numsub[&live_channel("hot")], 1);
    let list = client_list(&reply_text(&redis.command(&["CLIENT", "LIST"]).await));
    let subscribed: Vec<_> = list
        .iter()
        .filter(|c| c.get("sub").is_some_and(|n| n != "0"))
        .collect();
    assert_eq!(
        subscribed.len(),
        1,
        "connections holding subscriptions: {list:?}"
    );
    assert_eq!(subscribed[0]["sub"], "1", "{list:?}");
    let with_hundred = clients(&reply_text(&redis.command(&["INFO", "clients"]).await));
    eprintln!(
        "Redis connections (the test's INFO included): {with_one} with 1 local subscriber, \
         {with_hundred} with 100"
    );
    assert!(
        with_hundred < 50,
        "{with_hundred} Redis connections for 100 local subscribers of one topic"
    );

    node.api().publish_ok("hot", json!("to all")).await;
    for stream in &mut streams {
        assert_eq!(stream.event().await.data, "to all");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_join_and_leave_of_one_topic_ends_subscribed_exactly_while_someone_listens() {
    let redis = RedisServer::start().await;
    let node = Node::builder()
        .env("HERALD__REDIS__URL", &redis.url())
        .start()
        .await;
    let channel = live_channel("flap");
    let numsub =
        || async { numsub_counts(&redis.command(&["PUBSUB", "NUMSUB", &channel]).await)[&channel] };
    // Twenty clients each join and leave the same topic ten times, at once:
    // the node's topic goes from zero to some subscribers and back over and
    // over, racing its SUBSCRIBE and UNSUBSCRIBE.
    join_all((0..20).map(|_| async {
        for _ in 0..10 {
            let client = open(std::slice::from_ref(&node), 0, vec!["flap".into()]).await;
            drop(client);
        }
    }))
    .await;
    let settled = tokio::time::timeout(TIMEOUT, async {
        while numsub().await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "a subscription stayed with no one listening"
    );

    // And the next client is served.
    let mut last = open(std::slice::from_ref(&node), 0, vec!["flap".into()]).await;
    assert_eq!(numsub().await, 1);
    node.api().publish_ok("flap", json!("served")).await;
    assert_eq!(last.stream.event().await.data, "served");
}
