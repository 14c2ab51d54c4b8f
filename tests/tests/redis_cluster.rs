//! herald on a real Redis Cluster (3 primaries, a replica each): topics
//! spread over the shards, sharded pub/sub only where a node needs it, and
//! streams that lose and double nothing through a failover, a crash and a
//! slot moving to another shard.
//!
//! Each test starts its own cluster (`redis-server --cluster-enabled yes`)
//! and herald nodes pointed at it with `redis.cluster_nodes`; what Redis
//! says (`PUBSUB SHARDCHANNELS`, `CLUSTER SHARDS`) is checked with Redis's
//! own answers, and what clients receive with the publisher's record.

use std::time::Duration;

use herald_testkit::{
    data, eventually, start_nodes, topic_slot, Node, RedisCluster, Resp, Traffic, RESYNC, TIMEOUT,
};
use serde_json::json;
use tokio::time::Instant;

/// Longer than a failover or a promotion (about 4 s here).
const QUIET: Duration = Duration::from_secs(30);
/// Events accepted before and after each fault.
const ENOUGH: usize = 20;
/// How often the test publisher publishes.
const PACE: Duration = Duration::from_millis(10);

async fn herald_on(cluster: &RedisCluster, count: usize) -> Vec<Node> {
    let builder = Node::builder().env("HERALD__REDIS__CLUSTER_NODES", &cluster.seeds_env());
    start_nodes(&builder, count).await
}

/// One topic per primary, in the primaries' order.
async fn one_topic_per_shard(cluster: &RedisCluster, prefix: &str) -> Vec<(u16, String)> {
    cluster
        .topics_on_each_primary(prefix, 1)
        .await
        .into_iter()
        .map(|(primary, mut topics)| (primary, topics.remove(0)))
        .collect()
}

fn strings(reply: &Resp) -> Vec<String> {
    herald_testkit::reply_strings(reply)
}

/// The live channels a primary holds sharded subscriptions for.
async fn shard_channels(cluster: &RedisCluster, primary: u16) -> Vec<String> {
    strings(&cluster.command(primary, &["PUBSUB", "SHARDCHANNELS"]).await)
}

fn channel(topic: &str) -> String {
    herald_testkit::live_channel(topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_on_every_shard_reach_every_node_and_resume_on_any_node() {
    let cluster = RedisCluster::start(3, 1).await;
    let topics = one_topic_per_shard(&cluster, "spread").await;
    let names: Vec<&str> = topics.iter().map(|(_, t)| t.as_str()).collect();
    let nodes = herald_on(&cluster, 3).await;

    let mut all = nodes[1].subscribe(&names).await;
    let mut singles = Vec::new();
    for topic in &names {
        singles.push(nodes[2].subscribe(&[topic]).await);
    }
    let mut ids = Vec::new();
    for topic in &names {
        ids.push(
            nodes[0]
                .api()
                .publish_ok(topic, json!(format!("{topic}-1")))
                .await,
        );
    }
    let got = all.events(3, TIMEOUT).await;
    let mut got: Vec<&str> = data(&got);
    got.sort_unstable();
    let mut want: Vec<String> = names.iter().map(|t| format!("{t}-1")).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    for ((stream, topic), id) in singles.iter_mut().zip(&names).zip(&ids) {
        let event = stream.event().await;
        assert_eq!(event.data, format!("{topic}-1"));
        assert_eq!(&event.id, id, "a single-topic id is the publish cursor");
    }

    // The composite cursor of node 1 resumes every shard's topic on node 2.
    let cursor = all.last_event_id().to_owned();
    drop(all);
    for topic in &names {
        nodes[0]
            .api()
            .publish_ok(topic, json!(format!("{topic}-2")))
            .await;
    }
    let mut resumed = nodes[2]
        .subscribe_request()
        .topics(&names)
        .last_event_id(&cursor)
        .send()
        .await;
    let events = resumed.events(3, TIMEOUT).await;
    assert!(events.iter().all(|e| e.event != RESYNC), "{events:?}");
    let mut got = data(&events);
    got.sort_unstable();
    let mut want: Vec<String> = names.iter().map(|t| format!("{t}-2")).collect();
    want.sort_unstable();
    assert_eq!(got, want, "exactly what was missed, from every shard");

    // A single-topic cursor resumes on yet another node.
    let mut one = nodes[0]
        .subscribe_request()
        .topic(names[1])
        .last_event_id(&ids[1])
        .send()
        .await;
    assert_eq!(one.event().await.data, format!("{}-2", names[1]));

    // Presence is summed over nodes, whatever shard holds the topic: node 2
    // has a single-topic and the resumed stream on each, node 0 one more on
    // the second topic.
    for (index, topic) in names.iter().enumerate() {
        let want = if index == 1 { 3 } else { 2 };
        eventually(QUIET, "subscribers counted across nodes", || async {
            let info = nodes[1].api().topic_info(topic).await;
            (info.body["subscribers"] == want).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_only_on_the_shards_of_its_topics() {
    let cluster = RedisCluster::start(3, 1).await;
    let topics = one_topic_per_shard(&cluster, "only").await;
    let nodes = herald_on(&cluster, 1).await;
    let (home, topic) = &topics[0];
    let mut stream = nodes[0].subscribe(&[topic.as_str()]).await;
    nodes[0].api().publish_ok(topic, json!("x")).await;
    assert_eq!(stream.event().await.data, "x");

    assert_eq!(shard_channels(&cluster, *home).await, [channel(topic)]);
    for (primary, _) in &topics[1..] {
        assert!(
            shard_channels(&cluster, *primary).await.is_empty(),
            "primary {primary} holds subscriptions for topics it does not own"
        );
    }
    let numsub = cluster
        .command(*home, &["PUBSUB", "SHARDNUMSUB", &channel(topic)])
        .await;
    assert_eq!(herald_testkit::numsub_counts(&numsub)[&channel(topic)], 1);

    // The last subscriber leaving ends the subscription.
    drop(stream);
    eventually(QUIET, "the sharded subscription to end", || async {
        shard_channels(&cluster, *home)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_fails_only_its_part_and_the_retry_completes_without_duplicates() {
    // No replicas: a stopped shard stays down until it is resumed.
    let mut cluster = RedisCluster::start(3, 0).await;
    let topics = one_topic_per_shard(&cluster, "part").await;
    let nodes = herald_on(&cluster, 1).await;
    let (up, down) = (&topics[0].1, &topics[1].1);
    let mut stream = nodes[0].subscribe(&[up.as_str(), down.as_str()]).await;
    let body = json!({"topics": [up, down], "data": "both", "idempotency_key": "k1"});

    cluster.pause(topics[1].0).await;
    let refused = nodes[0].api().publish(&body).await;
    refused.assert_problem(503);
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    // The other shard's topic is not affected meanwhile.
    let other = &topics[2].1;
    nodes[0].api().publish_ok(other, json!("unaffected")).await;
    assert_eq!(nodes[0].api().status_of("/readyz").await, Some(200));

    cluster.resume(topics[1].0);
    let ids = eventually(QUIET, "the retry to be accepted", || async {
        let reply = nodes[0].api().publish(&body).await;
        (reply.status == 202).then(|| reply.body["ids"].clone())
    })
    .await;
    let events = stream.events(2, TIMEOUT).await;
    assert!(events.iter().all(|e| e.data == "both"), "{events:?}");
    // Exactly one event per topic was stored: the first attempt's, for the
    // topic whose shard was up, and one for the other.
    for topic in [up, down] {
        assert_eq!(nodes[0].api().history_length(topic).await, 1, "{topic}");
        assert!(ids[topic.as_str()].is_string(), "{ids}");
    }
    // A repeat answers the same ids and publishes nothing.
    let again = nodes[0].api().publish(&body).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.body["ids"], ids);
    nodes[0].api().publish_ok(up, json!("after")).await;
    let next = stream.event().await;
    assert_eq!(next.data, "after", "no duplicate before it");
}

/// Two nodes, a stream per node on every topic (one of them multi-topic),
/// a publisher on node 0.
async fn traffic(cluster: &RedisCluster, run: &str) -> (Vec<Node>, Vec<(u16, String)>, Traffic) {
    let topics = one_topic_per_shard(cluster, run).await;
    let names: Vec<&str> = topics.iter().map(|(_, t)| t.as_str()).collect();
    let nodes = herald_on(cluster, 2).await;
    let mut streams = vec![(
        "node 0, every topic".to_owned(),
        nodes[0].subscribe(&names).await,
        names.iter().map(|t| (*t).to_owned()).collect(),
    )];
    for topic in &names {
        streams.push((
            format!("node 1, {topic}"),
            nodes[1].subscribe(&[topic]).await,
            vec![(*topic).to_owned()],
        ));
    }
    let traffic = Traffic::start(nodes[0].api(), run, &names, PACE, streams, QUIET);
    (nodes, topics, traffic)
}

/// Failovers `node` counted so far.
async fn failovers(node: &Node) -> f64 {
    let name = "herald_broker_failovers_total";
    node.api().metric(name, &[]).await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_under_load_loses_doubles_and_resyncs_nothing() {
    let cluster = RedisCluster::start(3, 1).await;
    let (nodes, topics, traffic) = traffic(&cluster, "manual").await;
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;

    let replica = cluster.replica_of(topics[0].0).await;
    cluster.failover(replica).await;
    let after = Instant::now();
    traffic.wait_accepted_after(after, ENOUGH).await;
    for node in &nodes {
        eventually(QUIET, "the failover to be counted", || async {
            (failovers(node).await >= 1.0).then_some(())
        })
        .await;
    }
    // The promoted replica holds both nodes' live subscriptions now.
    eventually(
        QUIET,
        "both nodes subscribed on the promoted replica",
        || async {
            let numsub = cluster
                .command(replica, &["PUBSUB", "SHARDNUMSUB", &channel(&topics[0].1)])
                .await;
            (herald_testkit::numsub_counts(&numsub)[&channel(&topics[0].1)] == 2).then_some(())
        },
    )
    .await;
    let delivery = traffic.finish().await;
    delivery.assert_every_event_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_never_leaves_a_silent_gap() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let (nodes, topics, traffic) = traffic(&cluster, "killed").await;
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;

    let victim = topics[0].0;
    cluster.kill(victim).await;
    let promoted = cluster.wait_promoted(victim).await;
    let since = Instant::now();
    // Publishes to the lost shard succeed again within 10 s of promotion.
    let topic = &topics[0].1;
    eventually(
        Duration::from_secs(10),
        "a publish to the promoted shard",
        || async {
            let probe = json!({"topic": topic, "data": format!("probe-{topic}")});
            (nodes[1].api().publish(&probe).await.status == 202).then_some(())
        },
    )
    .await;
    eprintln!("first publish after promotion: {:?}", since.elapsed());
    traffic.wait_accepted_after(since, ENOUGH).await;
    let delivery = traffic.finish().await;
    delivery.assert_every_event_once_or_resync();
    eprintln!("resyncs: {} (promoted {promoted})", delivery.resyncs());
    for node in &nodes {
        assert!(failovers(node).await >= 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moving_to_another_shard_under_open_streams_loses_doubles_and_resyncs_nothing() {
    let cluster = RedisCluster::start(3, 1).await;
    let (nodes, topics, traffic) = traffic(&cluster, "moving").await;
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;

    let (source, topic) = &topics[0];
    let target = topics[1].0;
    // Publishes go on in each state of the migration: slot marked as
    // migrating (keys still on the source), keys moved (the source answers
    // ASK), slot handed over (MOVED, and Redis drops the source's sharded
    // subscriptions).
    let migration = cluster.begin_migration(topic_slot(topic), target).await;
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;
    migration.move_keys(usize::MAX).await;
    assert_eq!(migration.keys_left().await, 0);
    traffic.wait_accepted_after(Instant::now(), ENOUGH).await;
    migration.finish().await;
    let moved = Instant::now();
    traffic.wait_accepted_after(moved, ENOUGH).await;
    // Both nodes now hear the topic from its new shard only.
    eventually(QUIET, "both nodes subscribed on the new owner", || async {
        let numsub = cluster
            .command(target, &["PUBSUB", "SHARDNUMSUB", &channel(topic)])
            .await;
        (herald_testkit::numsub_counts(&numsub)[&channel(topic)] == 2).then_some(())
    })
    .await;
    assert!(!shard_channels(&cluster, *source)
        .await
        .contains(&channel(topic)));
    let delivery = traffic.finish().await;
    delivery.assert_every_event_once();
    drop(nodes);
}

/// A replica that missed the newest events of one topic is promoted after
/// its primary crashed: streams that received those events resync that
/// topic only (not the other topic of the same shard), and the events
/// published after the failover get cursors no earlier id names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_that_lost_writes_resyncs_exactly_the_affected_topic() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let (primary, topics) = cluster.topics_on_each_primary("lw", 2).await.remove(0);
    let (lost, kept) = (topics[0].as_str(), topics[1].as_str());
    let nodes = herald_on(&cluster, 1).await;
    let node = &nodes[0];
    let mut both = node.subscribe(&[lost, kept]).await;
    node.api().publish_ok(lost, json!("lost-1")).await;
    node.api().publish_ok(kept, json!("kept-1")).await;
    let replica = cluster.replica_of(primary).await;
    let replicated = cluster.command(primary, &["WAIT", "1", "5000"]).await;
    assert_eq!(replicated, Resp::Integer(1));

    // Replication stops (an ACL rule on the user replicas sync as, and the
    // replica's link cut); two acknowledged events of `lost` die with the
    // primary.
    let reply = cluster
        .command(primary, &["ACL", "SETUSER", "default", "-psync", "-sync"])
        .await;
    assert_eq!(reply, Resp::Simple("OK".into()));
    let killed = cluster
        .command(primary, &["CLIENT", "KILL", "TYPE", "replica"])
        .await;
    assert_eq!(killed, Resp::Integer(1));
    let gone = [
        node.api().publish_ok(lost, json!("lost-2")).await,
        node.api().publish_ok(lost, json!("lost-3")).await,
    ];
    assert_eq!(
        data(&both.events(4, TIMEOUT).await),
        ["lost-1", "kept-1", "lost-2", "lost-3"]
    );
    cluster.kill(primary).await;
    assert_eq!(cluster.wait_promoted(primary).await, replica);

    let after = eventually(QUIET, "a publish on the promoted replica", || async {
        let reply = node
            .api()
            .publish(&json!({"topic": lost, "data": "lost-4", "idempotency_key": "l4"}))
            .await;
        (reply.status == 202).then(|| reply.body["id"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(
        !gone.contains(&after),
        "a new event reuses a lost event's cursor"
    );
    node.api().publish_ok(kept, json!("kept-2")).await;
    let events = both.events_until(TIMEOUT, |e| e.data == "kept-2").await;
    let resyncs: Vec<Vec<String>> = events
        .iter()
        .filter(|e| e.event == RESYNC)
        .map(herald_testkit::resync_topics)
        .collect();
    assert_eq!(resyncs, [vec![lost.to_owned()]], "{events:?}");
    let live: Vec<&str> = events
        .iter()
        .filter(|e| e.event != RESYNC)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(live, ["lost-4", "kept-2"]);

    // A cursor naming a lost event resyncs.
    let mut late = node
        .subscribe_request()
        .topic(lost)
        .last_event_id(&gone[1])
        .send()
        .await;
    assert_eq!(late.event().await.event, RESYNC);
}
