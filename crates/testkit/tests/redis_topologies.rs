//! The kit's Redis Cluster and Sentinel topologies against real
//! `redis-server` processes on free ports: they form with every node in
//! agreement, fail over on demand and after a crash or a freeze, move a
//! slot with its keys, and require passwords when asked to. Each test
//! prints how long the topology took to start and to fail over.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use herald_testkit::{
    info_field, key_slot, reply_text, topic_slot, ClusterOptions, ClusterRole, RedisCluster,
    RedisSentinel, Resp, SentinelOptions, CLUSTER_SLOTS,
};

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

fn bulk(text: &str) -> Resp {
    Resp::Bulk(Some(text.as_bytes().to_vec()))
}

/// Whether `reply` is the error `<kind> <slot> 127.0.0.1:<port>`
/// (`MOVED` or `ASK`).
fn is_redirect(reply: &Resp, kind: &str, slot: u16, port: u16) -> bool {
    *reply == Resp::Error(format!("{kind} {slot} 127.0.0.1:{port}"))
}

async fn start_cluster(primaries: usize, replicas: usize) -> RedisCluster {
    let started = Instant::now();
    let cluster = RedisCluster::start(primaries, replicas).await;
    eprintln!(
        "cluster {primaries}+{} settled in {:?}",
        primaries * replicas,
        started.elapsed()
    );
    cluster
}

async fn start_sentinel(options: SentinelOptions) -> RedisSentinel {
    let started = Instant::now();
    let sentinel = RedisSentinel::start(options).await;
    eprintln!("sentinel deployment formed in {:?}", started.elapsed());
    sentinel
}

#[tokio::test]
async fn a_cluster_of_three_primaries_with_a_replica_each_forms_and_every_node_agrees() {
    let cluster = start_cluster(3, 1).await;
    let nodes = cluster.nodes().await;
    assert_eq!(nodes.len(), 6, "{nodes:#?}");
    assert!(nodes.iter().all(|n| n.running && n.id.len() == 40));
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3);
    let served: usize = nodes
        .iter()
        .flat_map(|n| n.slots.iter())
        .map(|range| range.len())
        .sum();
    assert_eq!(served, usize::from(CLUSTER_SLOTS));
    for &primary in &primaries {
        let replica = cluster.replica_of(primary).await;
        assert_eq!(cluster.replicas_of(primary).await, vec![replica]);
        let node = nodes.iter().find(|n| n.port == replica).unwrap();
        assert_eq!(
            node.role,
            ClusterRole::Replica {
                primary_port: primary
            }
        );
        assert!(node.slots.is_empty());
    }

    // Checked here with Redis's own answers, not the kit's reading of them.
    let mut layouts = Vec::new();
    for port in cluster.ports() {
        let info = reply_text(&cluster.command(port, &["CLUSTER", "INFO"]).await);
        assert_eq!(info_field(&info, "cluster_state"), Some("ok"), "{port}");
        assert_eq!(
            info_field(&info, "cluster_known_nodes"),
            Some("6"),
            "{port}"
        );
        let Resp::Array(Some(mut ranges)) = cluster.command(port, &["CLUSTER", "SLOTS"]).await
        else {
            panic!("CLUSTER SLOTS on {port}");
        };
        ranges.sort_by_key(|range| format!("{range:?}"));
        layouts.push(ranges);
    }
    assert!(layouts.windows(2).all(|w| w[0] == w[1]), "{layouts:#?}");

    let key = "herald:{news}:events";
    let slot = key_slot(key);
    let owner = cluster.owner_of_slot(slot).await;
    assert_eq!(cluster.command(owner, &["SET", key, "v"]).await, ok());
    let other = primaries.iter().copied().find(|&p| p != owner).unwrap();
    let moved = cluster.command(other, &["GET", key]).await;
    assert!(is_redirect(&moved, "MOVED", slot, owner), "{moved:?}");

    let seeds = cluster.seeds_env();
    assert_eq!(seeds.split(',').count(), 6);
    for port in cluster.ports() {
        assert_ne!(port, 6379);
        assert!(seeds.contains(&format!("redis://127.0.0.1:{port}")));
    }
}

#[tokio::test]
async fn key_slots_match_cluster_keyslot_and_topics_spread_over_every_primary() {
    let cluster = start_cluster(3, 0).await;
    let port = cluster.ports()[0];
    let mut keys: Vec<String> = [
        "", "{", "}", "{}", "{}{a}", "a{b}c", "a{b}{c}", "{{a}}", "x{}y", "}{a}", "{a", "é{ü}",
    ]
    .iter()
    .map(|k| (*k).to_owned())
    .collect();
    // A fixed pseudo-random sequence (xorshift), so a failure reproduces.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let alphabet = b"abcxyz0189:/_-{}";
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = usize::try_from(state % 24).unwrap();
        let key: String = (0..len)
            .map(|i| char::from(alphabet[usize::try_from((state >> (i * 2)) % 16).unwrap()]))
            .collect();
        keys.push(key);
    }
    for key in &keys {
        let answer = cluster.command(port, &["CLUSTER", "KEYSLOT", key]).await;
        assert_eq!(answer, Resp::Integer(key_slot(key).into()), "key {key:?}");
    }
    for i in 0..50 {
        let topic = format!("room-{i}/chat:{}", i * 7);
        let events = format!("herald:{{{topic}}}:events");
        let answer = cluster
            .command(port, &["CLUSTER", "KEYSLOT", &events])
            .await;
        assert_eq!(answer, Resp::Integer(topic_slot(&topic).into()), "{topic}");
        assert_eq!(topic_slot(&topic), key_slot(&topic));
    }

    let shards = cluster.topics_on_each_primary("spread", 3).await;
    assert_eq!(
        shards.iter().map(|(port, _)| *port).collect::<Vec<_>>(),
        cluster.primaries().await
    );
    for (primary, topics) in shards {
        assert_eq!(topics.len(), 3);
        for topic in topics {
            assert!(topic.starts_with("spread"));
            assert_eq!(cluster.owner_of_slot(topic_slot(&topic)).await, primary);
        }
    }
}

#[tokio::test]
async fn a_manual_failover_swaps_the_primary_and_its_replica_without_losing_writes() {
    let cluster = start_cluster(3, 1).await;
    let shards = cluster.topics_on_each_primary("failover", 1).await;
    let (primary, topics) = &shards[0];
    let primary = *primary;
    let replica = cluster.replica_of(primary).await;
    let key = format!("herald:{{{}}}:events", topics[0]);
    assert_eq!(cluster.command(primary, &["SET", &key, "kept"]).await, ok());

    let started = Instant::now();
    cluster.failover(replica).await;
    eprintln!("CLUSTER FAILOVER settled in {:?}", started.elapsed());

    let primaries = cluster.primaries().await;
    assert!(primaries.contains(&replica) && !primaries.contains(&primary));
    assert_eq!(cluster.replicas_of(replica).await, vec![primary]);
    assert_eq!(cluster.command(replica, &["GET", &key]).await, bulk("kept"));
    let moved = cluster.command(primary, &["GET", &key]).await;
    assert!(
        is_redirect(&moved, "MOVED", key_slot(&key), replica),
        "{moved:?}"
    );
}

#[tokio::test]
async fn a_killed_primary_is_replaced_by_its_replica_and_rejoins_as_its_replica() {
    let mut cluster = start_cluster(3, 1).await;
    let primary = cluster.primaries().await[1];
    let replica = cluster.replica_of(primary).await;

    cluster.kill(primary).await;
    let started = Instant::now();
    let promoted = cluster.wait_promoted(primary).await;
    eprintln!("killed primary promoted away in {:?}", started.elapsed());
    assert_eq!(promoted, replica);
    let nodes = cluster.nodes().await;
    let dead = nodes.iter().find(|n| n.port == primary).unwrap();
    assert!(!dead.running && dead.slots.is_empty(), "{dead:?}");

    let started = Instant::now();
    cluster.restart(primary).await;
    eprintln!("restarted primary rejoined in {:?}", started.elapsed());
    assert_eq!(cluster.replicas_of(replica).await, vec![primary]);
    assert_eq!(cluster.primaries().await.len(), 3);
}

#[tokio::test]
async fn a_frozen_primary_is_failed_over_and_follows_the_new_one_once_resumed() {
    let mut cluster = start_cluster(3, 1).await;
    let primary = cluster.primaries().await[2];
    let replica = cluster.replica_of(primary).await;

    cluster.pause(primary).await;
    let started = Instant::now();
    assert_eq!(cluster.wait_promoted(primary).await, replica);
    eprintln!("paused primary promoted away in {:?}", started.elapsed());

    cluster.resume(primary);
    let started = Instant::now();
    cluster.wait_settled().await;
    eprintln!("resumed primary rejoined in {:?}", started.elapsed());
    assert_eq!(cluster.replicas_of(replica).await, vec![primary]);
}

#[tokio::test]
async fn a_slot_migrates_online_with_its_keys() {
    let cluster = start_cluster(3, 1).await;
    let shards = cluster.topics_on_each_primary("migrate", 1).await;
    let (source, topics) = &shards[0];
    let (target, _) = &shards[1];
    let (source, target) = (*source, *target);
    let slot = topic_slot(&topics[0]);
    // More keys than one MIGRATE batch moves.
    let keys: Vec<String> = (0..250)
        .map(|i| format!("herald:{{{}}}:key{i}", topics[0]))
        .collect();
    for key in &keys {
        assert_eq!(cluster.command(source, &["SET", key, key]).await, ok());
    }

    let migration = cluster.begin_migration(slot, target).await;
    assert_eq!(
        (
            migration.slot(),
            migration.source_port(),
            migration.target_port()
        ),
        (slot, source, target)
    );
    assert_eq!(migration.move_keys(120).await, 120);
    assert_eq!(migration.keys_left().await, 130);
    // Mid-migration: the source serves the keys it holds and sends
    // clients to the target for the others, new keys included.
    let mut asked = 0;
    for key in &keys {
        let reply = cluster.command(source, &["GET", key]).await;
        if is_redirect(&reply, "ASK", slot, target) {
            asked += 1;
        } else {
            assert_eq!(reply, bulk(key));
        }
    }
    assert_eq!(asked, 120);
    let new_key = format!("herald:{{{}}}:new", topics[0]);
    let reply = cluster.command(source, &["SET", &new_key, "x"]).await;
    assert!(is_redirect(&reply, "ASK", slot, target), "{reply:?}");
    assert_eq!(cluster.owner_of_slot(slot).await, source);

    let started = Instant::now();
    migration.finish().await;
    eprintln!("slot migration finished in {:?}", started.elapsed());
    assert_eq!(cluster.owner_of_slot(slot).await, target);
    for key in &keys {
        assert_eq!(cluster.command(target, &["GET", key]).await, bulk(key));
        let moved = cluster.command(source, &["GET", key]).await;
        assert!(is_redirect(&moved, "MOVED", slot, target), "{moved:?}");
    }

    cluster.migrate_slot(slot, source).await;
    assert_eq!(cluster.owner_of_slot(slot).await, source);
    assert_eq!(
        cluster.command(source, &["GET", &keys[0]]).await,
        bulk(&keys[0])
    );
}

#[tokio::test]
async fn a_cluster_with_a_password_refuses_clients_without_it_and_still_migrates() {
    let cluster = RedisCluster::start_with(ClusterOptions {
        password: Some("cluster secret".into()),
        ..ClusterOptions::default()
    })
    .await;
    let primaries = cluster.primaries().await;
    // Raw, since the kit's own commands authenticate first.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", primaries[0]))
        .await
        .unwrap();
    stream.write_all(b"PING\r\n").await.unwrap();
    let mut answer = [0; 7];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"-NOAUTH");
    let key = "herald:{auth}:events";
    let slot = key_slot(key);
    let owner = cluster.owner_of_slot(slot).await;
    assert_eq!(cluster.command(owner, &["SET", key, "v"]).await, ok());
    let target = primaries.iter().copied().find(|&p| p != owner).unwrap();
    // MIGRATE authenticates to the target itself.
    cluster.migrate_slot(slot, target).await;
    assert_eq!(cluster.command(target, &["GET", key]).await, bulk("v"));
    assert_eq!(cluster.password(), Some("cluster secret"));
}

#[tokio::test]
async fn sentinels_form_and_a_failover_on_demand_moves_the_primary() {
    let sentinel = start_sentinel(SentinelOptions::default()).await;
    assert_eq!(sentinel.master_name(), "herald");
    assert_eq!(sentinel.sentinel_urls().len(), 3);
    assert_eq!(sentinel.sentinels_env().split(',').count(), 3);
    let data = sentinel.data_ports();
    let primary = sentinel.primary_port().await;
    assert_eq!(primary, data[0]);
    assert_eq!(sentinel.replica_ports().await, vec![data[1]]);
    assert_eq!(sentinel.command(primary, &["SET", "k", "v"]).await, ok());
    // The write reached the replica before the failover.
    assert_eq!(
        sentinel.command(primary, &["WAIT", "1", "5000"]).await,
        Resp::Integer(1)
    );

    let started = Instant::now();
    let new = sentinel.failover().await;
    eprintln!("SENTINEL FAILOVER done in {:?}", started.elapsed());
    assert_eq!(new, data[1]);
    assert_eq!(sentinel.primary_port().await, new);
    assert_eq!(sentinel.command(new, &["GET", "k"]).await, bulk("v"));
    assert_eq!(sentinel.command(new, &["SET", "k", "w"]).await, ok());
}

#[tokio::test]
async fn sentinels_replace_a_killed_primary_and_the_old_one_rejoins_as_a_replica() {
    let mut sentinel = start_sentinel(SentinelOptions {
        replicas: 2,
        ..SentinelOptions::default()
    })
    .await;
    let old = sentinel.kill_primary().await;
    let started = Instant::now();
    let new = sentinel.wait_new_primary(old).await;
    eprintln!("killed primary replaced in {:?}", started.elapsed());
    assert_ne!(new, old);
    assert!(sentinel.data_ports().contains(&new));
    let others: Vec<u16> = sentinel
        .data_ports()
        .into_iter()
        .filter(|&p| p != old && p != new)
        .collect();
    assert_eq!(sentinel.replica_ports().await, others);

    let started = Instant::now();
    sentinel.restart(old).await;
    eprintln!(
        "old primary rejoined as a replica in {:?}",
        started.elapsed()
    );
    let mut replicas = others.clone();
    replicas.push(old);
    replicas.sort_unstable();
    assert_eq!(sentinel.replica_ports().await, replicas);
    let info = reply_text(&sentinel.command(old, &["INFO", "replication"]).await);
    assert_eq!(
        info_field(&info, "master_port"),
        Some(new.to_string().as_str())
    );
}

#[tokio::test]
async fn sentinels_and_data_nodes_require_their_passwords_when_configured() {
    let mut sentinel = start_sentinel(SentinelOptions {
        master_name: "secured".into(),
        password: Some("data-secret".into()),
        sentinel_password: Some("sentinel-secret".into()),
        ..SentinelOptions::default()
    })
    .await;
    let sentinel_port = sentinel.sentinel_ports()[0];
    let ask = ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "secured"];
    let refused = sentinel.command_without_auth(sentinel_port, &ask).await;
    assert!(
        matches!(&refused, Resp::Error(e) if e.starts_with("NOAUTH")),
        "{refused:?}"
    );
    let primary = sentinel.primary_port().await;
    let answer = sentinel.command(sentinel_port, &ask).await;
    assert_eq!(
        answer,
        Resp::Array(Some(vec![bulk("127.0.0.1"), bulk(&primary.to_string())]))
    );
    let refused = sentinel.command_without_auth(primary, &["GET", "k"]).await;
    assert!(
        matches!(&refused, Resp::Error(e) if e.starts_with("NOAUTH")),
        "{refused:?}"
    );
    assert_eq!(sentinel.command(primary, &["SET", "k", "v"]).await, ok());

    // A sentinel restarted from the config file it rewrote rejoins the
    // others, password and all.
    sentinel.kill(sentinel_port);
    sentinel.restart(sentinel_port).await;
    assert_eq!(sentinel.command(sentinel_port, &ask).await, answer);

    // Promoting and reconfiguring nodes needs the data password too.
    let new = sentinel.failover().await;
    assert_ne!(new, primary);
    assert_eq!(sentinel.command(new, &["GET", "k"]).await, bulk("v"));
}

#[tokio::test]
async fn sentinels_replace_a_frozen_primary() {
    let mut sentinel = start_sentinel(SentinelOptions::default()).await;
    let old = sentinel.primary_port().await;
    sentinel.pause(old);
    let started = Instant::now();
    let new = sentinel.wait_new_primary(old).await;
    eprintln!("frozen primary replaced in {:?}", started.elapsed());
    assert_eq!(new, sentinel.data_ports()[1]);
    // Resumed, it is a second primary until Sentinel demotes it (about
    // 10 s later, which this test does not wait for).
    sentinel.resume(old);
    assert_eq!(
        sentinel.command(old, &["PING"]).await,
        Resp::Simple("PONG".into())
    );
}
