//! Redis Cluster's shard map, as `CLUSTER SHARDS` describes it: which
//! primary serves each hash slot, and which nodes are replicas.

use std::collections::{HashMap, HashSet};

use redis::Value;

use crate::{redis::slot::SLOTS, BrokerError};

/// A node as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterNode {
    pub(crate) id: String,
    /// `host:port` to connect to: the announced endpoint (a hostname when
    /// the cluster prefers hostnames), the TLS port when `tls` is asked.
    pub(crate) addr: String,
    pub(crate) primary: bool,
    pub(crate) healthy: bool,
}

/// Which primary serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardMap {
    /// Index into `primaries` per slot; `None` while no node serves it.
    pub(crate) slots: Vec<Option<u16>>,
    /// Primaries' addresses.
    pub(crate) primaries: Vec<String>,
    /// Ids of the primaries that own slots, by address.
    pub(crate) primary_ids: HashMap<String, String>,
    /// Ids of nodes that are replicas.
    pub(crate) replica_ids: HashSet<String>,
}

impl ShardMap {
    /// A map routing nothing, before the cluster answered.
    pub(crate) fn empty() -> Self {
        ShardMap {
            slots: vec![None; SLOTS],
            primaries: Vec::new(),
            primary_ids: HashMap::new(),
            replica_ids: HashSet::new(),
        }
    }

    /// Reads a `CLUSTER SHARDS` reply. `tls` picks the nodes' TLS ports.
    pub(crate) fn parse(reply: &Value, tls: bool) -> Result<Self, BrokerError> {
        let shards = as_array(reply)?;
        let mut map = ShardMap::empty();
        // (slot ranges, primary) per shard that serves slots, ordered by
        // first slot so the same cluster always reads as the same map.
        let mut serving = Vec::new();
        for shard in shards {
            let fields = as_map(shard)?;
            let ranges: Vec<i64> = match fields.get("slots") {
                Some(value) => as_array(value)?
                    .iter()
                    .map(as_int)
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            let nodes = match fields.get("nodes") {
                Some(value) => as_array(value)?
                    .iter()
                    .map(|node| parse_node(node, tls))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            for node in nodes.iter().filter(|n| !n.primary) {
                map.replica_ids.insert(node.id.clone());
            }
            // A shard whose primary failed keeps it listed until a replica
            // is promoted; its slots stay routed to it, and commands to
            // them fail (503) until then. A failed old primary may also be
            // listed beside the promoted one for a while: prefer the
            // healthy one.
            let primary = nodes
                .into_iter()
                .filter(|n| n.primary)
                .max_by_key(|n| n.healthy);
            if let (Some(primary), false) = (primary, ranges.is_empty()) {
                serving.push((ranges, primary));
            }
        }
        serving.sort_by_key(|(ranges, _)| ranges.first().copied());
        for (ranges, primary) in serving {
            let index = map.primaries.len() as u16;
            map.primaries.push(primary.addr.clone());
            map.primary_ids.insert(primary.addr, primary.id);
            for range in ranges.chunks(2) {
                let [start, end] = range else {
                    return Err(malformed("odd slot range list"));
                };
                if !(0..SLOTS as i64).contains(start) || !(*start..SLOTS as i64).contains(end) {
                    return Err(malformed("slot out of range"));
                }
                for slot in *start..=*end {
                    map.slots[slot as usize] = Some(index);
                }
            }
        }
        Ok(map)
    }

    /// The address of the primary serving `slot`.
    #[cfg(test)]
    pub(crate) fn owner(&self, slot: u16) -> Option<&str> {
        self.slots[usize::from(slot)].map(|i| self.primaries[usize::from(i)].as_str())
    }

    /// Primaries of this map that were replicas in `before`: promotions.
    pub(crate) fn promoted_since(&self, before: &ShardMap) -> usize {
        self.primary_ids
            .values()
            .filter(|id| before.replica_ids.contains(*id))
            .count()
    }
}

fn parse_node(node: &Value, tls: bool) -> Result<ClusterNode, BrokerError> {
    let fields = as_map(node)?;
    let text = |name: &str| fields.get(name).map(|v| as_text(v)).transpose();
    let port = if tls {
        fields.get("tls-port").or(fields.get("port"))
    } else {
        fields.get("port")
    }
    .ok_or_else(|| malformed("node without port"))
    .and_then(|v| as_int(v))?;
    let endpoint = text("endpoint")?.filter(|e| !e.is_empty() && e != "?");
    let host = match endpoint {
        Some(host) => host,
        None => text("ip")?.ok_or_else(|| malformed("node without address"))?,
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(ClusterNode {
        id: text("id")?.ok_or_else(|| malformed("node without id"))?,
        addr,
        primary: text("role")?.as_deref() == Some("master"),
        healthy: text("health")?.as_deref() != Some("fail"),
    })
}

fn as_array(value: &Value) -> Result<&[Value], BrokerError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        _ => Err(malformed("expected an array")),
    }
}

/// A RESP2 flat key/value array (or a RESP3 map) as a map.
fn as_map(value: &Value) -> Result<HashMap<String, &Value>, BrokerError> {
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| Ok((as_text(k)?, v))).collect(),
        Value::Array(items) => items
            .chunks(2)
            .map(|pair| match pair {
                [k, v] => Ok((as_text(k)?, v)),
                _ => Err(malformed("odd key/value list")),
            })
            .collect(),
        _ => Err(malformed("expected a map")),
    }
}

fn as_text(value: &Value) -> Result<String, BrokerError> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(malformed("expected a string")),
    }
}

fn as_int(value: &Value) -> Result<i64, BrokerError> {
    match value {
        Value::Int(n) => Ok(*n),
        other => as_text(other)?
            .parse()
            .map_err(|_| malformed("expected an integer")),
    }
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Protocol(format!("unexpected CLUSTER SHARDS reply: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn node(id: &str, port: i64, role: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk(id),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk("online"),
        ])
    }

    fn shard(ranges: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(ranges.iter().map(|r| Value::Int(*r)).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn slots_route_to_their_shards_primary() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460],
                vec![node("a", 7000, "master"), node("b", 7001, "replica")],
            ),
            shard(
                &[5461, 10922, 16000, 16383],
                vec![node("c", 7002, "master")],
            ),
        ]);
        let map = ShardMap::parse(&reply, false).unwrap();
        assert_eq!(map.owner(0), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(5461), Some("127.0.0.1:7002"));
        assert_eq!(map.owner(16383), Some("127.0.0.1:7002"));
        assert_eq!(map.owner(12000), None);
        assert!(map.replica_ids.contains("b"));
    }

    #[test]
    fn a_promoted_replica_is_noticed() {
        let before = ShardMap::parse(
            &Value::Array(vec![shard(
                &[0, 16383],
                vec![node("a", 7000, "master"), node("b", 7001, "replica")],
            )]),
            false,
        )
        .unwrap();
        let after = ShardMap::parse(
            &Value::Array(vec![shard(
                &[0, 16383],
                vec![node("a", 7000, "replica"), node("b", 7001, "master")],
            )]),
            false,
        )
        .unwrap();
        assert_eq!(after.promoted_since(&before), 1);
        assert_eq!(before.promoted_since(&before), 0);
    }
}
