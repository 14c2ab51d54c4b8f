//! Finding the primary through Redis Sentinel, and hearing about failovers.
//!
//! The `redis` crate's Sentinel client does the asking: it queries the
//! sentinels for the master name and checks that the address it got
//! really is a primary. It resolves only when asked, and connections
//! already open stay on whatever server they reached, even once that
//! server is demoted. So the topology asks again whenever it has a reason
//! to believe the primary moved (a command answered `READONLY` or failed
//! to connect, the current primary's probe says it is a replica) and every
//! few seconds regardless; and a watcher subscribed to the sentinels'
//! `+switch-master` announcements makes it ask at once when they promote a
//! replica.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use redis::{
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
    ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, TlsMode,
};
use tokio::sync::{Mutex, Notify};

use crate::BrokerError;

/// How long one resolution through the sentinels may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves the current primary of one master name.
pub(crate) struct SentinelResolver {
    client: Mutex<SentinelClient>,
}

impl std::fmt::Debug for SentinelResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SentinelResolver")
    }
}

impl SentinelResolver {
    /// A resolver asking `nodes` for `master`. TLS to the data nodes
    /// follows the sentinels' scheme.
    pub(crate) fn new(
        nodes: &[String],
        master: &str,
        sentinel_password: Option<&str>,
        data_node: RedisConnectionInfo,
    ) -> Result<Self, BrokerError> {
        let mut sentinels = Vec::with_capacity(nodes.len());
        let mut tls = false;
        for url in nodes {
            tls |= url.starts_with("rediss://");
            let mut info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| BrokerError::Protocol(format!("redis.sentinel_nodes: {e}")))?;
            if let Some(password) = sentinel_password {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
            sentinels.push(info);
        }
        let mut node_info =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(data_node);
        if tls {
            node_info = node_info.set_tls_mode(TlsMode::Secure);
        }
        let client = SentinelClient::build(
            sentinels,
            master,
            Some(node_info),
            SentinelServerType::Master,
        )
        .map_err(|e| BrokerError::Protocol(format!("redis.sentinel_nodes: {e}")))?;
        Ok(Self {
            client: Mutex::new(client),
        })
    }

    /// The current primary: its `host:port` and how to connect to it.
    pub(crate) async fn resolve(&self) -> Result<(String, ConnectionInfo), BrokerError> {
        let lookup = async {
            let mut client = self.client.lock().await;
            client.async_get_client().await
        };
        let client = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| BrokerError::unavailable("the sentinels did not answer in time"))?
            .map_err(|e| BrokerError::unavailable(format!("sentinels: {e}")))?;
        let info = client.get_connection_info().clone();
        Ok((info.addr().to_string(), info))
    }

    /// Listens to a sentinel's `+switch-master` announcements and wakes
    /// `changed` on each, reconnecting (to any sentinel) when the
    /// subscription is lost. Runs until aborted.
    pub(crate) async fn watch(self: Arc<Self>, changed: Arc<Notify>) {
        let mut failures = 0u32;
        loop {
            match self.watch_once(&changed).await {
                Ok(()) => failures = 0,
                Err(error) => {
                    tracing::debug!(%error, "sentinel watch lost");
                    failures = failures.saturating_add(1);
                }
            }
            tokio::time::sleep(super::backoff(failures)).await;
        }
    }

    async fn watch_once(&self, changed: &Notify) -> Result<(), BrokerError> {
        let connect = async {
            let client = self.client.lock().await.async_get_sentinel_client().await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = tokio::time::timeout(RESOLVE_TIMEOUT, connect)
            .await
            .map_err(|_| BrokerError::unavailable("sentinel subscription timed out"))?
            .map_err(|e| BrokerError::unavailable(format!("sentinel: {e}")))?;
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            tracing::info!(
                announcement = %String::from_utf8_lossy(message.get_payload_bytes()),
                "sentinels switched the primary"
            );
            changed.notify_one();
        }
        Err(BrokerError::unavailable("sentinel subscription closed"))
    }
}
