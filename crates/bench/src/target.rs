//! The servers the bench can drive and the shape of their requests.
//!
//! herald and the Node floor take `POST /v1/publish` with a JSON envelope and
//! serve `GET /v1/events?topic=T`; Nchan takes the raw message as the POST
//! body of a per-channel publisher location and serves an EventSource
//! location per channel. The payload text is the same for all three, so the
//! `data:` line on the wire is byte for byte the same.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::frames::{write_payload, Stamp};

/// Which kind of server is under test.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// herald (`/v1/events`, `/v1/publish`).
    Herald,
    /// nginx with the Nchan module (`/sub/{topic}`, `/pub/{topic}`).
    Nchan,
    /// The bare Node.js floor server (herald's URL shape).
    Floor,
}

/// Request shapes for one target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The kind, for the report.
    pub kind: TargetKind,
    sub_template: String,
    pub_template: String,
}

impl Target {
    /// A target with its default URL templates, overridden where given.
    /// `{topic}` in a template is replaced by the topic name.
    pub fn new(kind: TargetKind, sub: Option<String>, publish: Option<String>) -> Self {
        let (default_sub, default_pub) = match kind {
            TargetKind::Herald | TargetKind::Floor => ("/v1/events?topic={topic}", "/v1/publish"),
            TargetKind::Nchan => ("/sub/{topic}", "/pub/{topic}"),
        };
        Self {
            kind,
            sub_template: sub.unwrap_or_else(|| default_sub.to_owned()),
            pub_template: publish.unwrap_or_else(|| default_pub.to_owned()),
        }
    }

    /// The subscribe path for `topic`.
    pub fn subscribe_path(&self, topic: &str) -> String {
        self.sub_template.replace("{topic}", topic)
    }

    /// The publish path for `topic`.
    pub fn publish_path(&self, topic: &str) -> String {
        self.pub_template.replace("{topic}", topic)
    }

    /// The publish body's content type.
    pub fn content_type(&self) -> &'static str {
        match self.kind {
            TargetKind::Herald | TargetKind::Floor => "application/json",
            TargetKind::Nchan => "text/plain",
        }
    }

    /// Writes the publish body for `topic` carrying `stamp` into `out`.
    pub fn write_body(&self, out: &mut Vec<u8>, topic: &str, stamp: Stamp, payload_bytes: usize) {
        match self.kind {
            TargetKind::Herald | TargetKind::Floor => {
                out.extend_from_slice(b"{\"topic\":\"");
                out.extend_from_slice(topic.as_bytes());
                out.extend_from_slice(b"\",\"data\":");
                write_payload(out, stamp, payload_bytes);
                out.push(b'}');
            }
            TargetKind::Nchan => write_payload(out, stamp, payload_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herald_body_wraps_the_payload_as_json_data() {
        let t = Target::new(TargetKind::Herald, None, None);
        let mut out = Vec::new();
        t.write_body(&mut out, "a.b", Stamp { seq: 7, sent_ns: 9 }, 0);
        assert_eq!(
            out,
            b"{\"topic\":\"a.b\",\"data\":{\"s\":7,\"t\":9,\"p\":\"\"}}"
        );
        assert_eq!(t.subscribe_path("a.b"), "/v1/events?topic=a.b");
        let n = Target::new(TargetKind::Nchan, None, None);
        assert_eq!(n.publish_path("x"), "/pub/x");
    }
}
