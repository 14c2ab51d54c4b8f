//! The kit's `RedisServer` against a real `redis-server`: it starts on a
//! free port, answers commands, stops, and restarts empty on the same port.

use herald_testkit::{RedisServer, Resp};

#[tokio::test]
async fn redis_server_starts_answers_stops_and_restarts_on_the_same_port() {
    let mut redis = RedisServer::start().await;
    let port = redis.port();
    assert_ne!(port, 6379);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(
        redis.command(&["SET", "k", "v"]).await,
        Resp::Simple("OK".into())
    );
    assert_eq!(
        redis.command(&["GET", "k"]).await,
        Resp::Bulk(Some(b"v".to_vec()))
    );

    redis.stop().await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing listens on {port} while Redis is stopped"
    );

    redis.restart().await;
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis.command(&["GET", "k"]).await,
        Resp::Bulk(None),
        "a restarted Redis keeps no data"
    );
}

#[tokio::test]
async fn two_redis_servers_get_different_ports() {
    let a = RedisServer::start().await;
    let b = RedisServer::start().await;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.command(&["PING"]).await, Resp::Simple("PONG".into()));
    assert_eq!(b.command(&["PING"]).await, Resp::Simple("PONG".into()));
}
