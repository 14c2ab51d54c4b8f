//! The application's subscribe hook: herald asks the backend whether a
//! request may open topics nothing else grants.
//!
//! The call is `POST <auth.subscribe_hook_url>` with the topics in a JSON
//! body and the client's `Cookie`, `Authorization` and `Origin` headers as
//! they came, plus `X-Forwarded-For` with the client's address appended. A
//! `2xx` allows (an optional `{"expires_in": seconds}` bounds the stream's
//! life), `401`/`403` deny with that status, and anything else, a timeout or
//! a failed connection is an error the subscriber is told to retry after.
//! Redirects are not followed, so credentials never travel to another host.
//!
//! Allow and deny answers are reused for `auth.subscribe_hook_cache` for the
//! same `Cookie`, `Authorization` and topics, keyed by a SHA-256 digest so
//! the cache never holds credentials; errors are never reused. The cache is
//! bounded: when full, expired answers go, and if that frees nothing the
//! cache starts over (a flood of distinct credentials costs hook calls, not
//! memory).

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use herald_broker::Topic;
use parking_lot::Mutex;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE, ORIGIN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::AuthHookMetrics;

/// Answers kept at most.
const MAX_CACHED: usize = 65_536;
/// Largest answer body read (only `expires_in` is looked for).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The request's own headers the hook sees, as raw values.
#[derive(Debug, Default, Clone)]
pub struct Forwarded {
    /// `Cookie`.
    pub cookie: Option<Vec<u8>>,
    /// `Authorization`.
    pub authorization: Option<Vec<u8>>,
    /// `Origin`.
    pub origin: Option<Vec<u8>>,
    /// `X-Forwarded-For` as received.
    pub forwarded_for: Option<Vec<u8>>,
    /// The client's address.
    pub peer: Option<IpAddr>,
}

/// What the hook decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Allowed; the stream must close at `until`, when given.
    Allow {
        /// The end of the stream's life.
        until: Option<Instant>,
    },
    /// Refused with this status (`401` or `403`).
    Deny(u16),
}

/// The hook gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The call failed or timed out.
    #[error("the subscribe hook did not answer: {0}")]
    Call(#[from] reqwest::Error),
    /// A status other than `2xx`, `401` and `403`.
    #[error("the subscribe hook answered {0}")]
    Status(reqwest::StatusCode),
}

/// The subscribe hook client with its answer cache.
pub struct Hook {
    url: reqwest::Url,
    client: reqwest::Client,
    cache_for: Duration,
    cache: Mutex<HashMap<[u8; 32], (Answer, Instant)>>,
    metrics: AuthHookMetrics,
}

#[derive(Serialize)]
struct Question<'a> {
    topics: Vec<&'a str>,
}

#[derive(Deserialize)]
struct Allowed {
    expires_in: Option<f64>,
}

impl Hook {
    /// A client of the hook at `url`.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built (no TLS roots readable).
    pub fn new(
        url: reqwest::Url,
        timeout: Duration,
        cache_for: Duration,
        metrics: AuthHookMetrics,
    ) -> reqwest::Result<Self> {
        let client = super::http_client()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            url,
            client,
            cache_for,
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Asks whether `forwarded`'s client may open `topics`, from the cache
    /// when an answer for the same credentials and topics is fresh.
    ///
    /// # Errors
    ///
    /// When the hook fails, times out or answers another status.
    pub async fn ask(&self, forwarded: &Forwarded, topics: &[Topic]) -> Result<Answer, HookError> {
        let key = cache_key(forwarded, topics);
        if let Some(answer) = self.cached(&key) {
            return Ok(answer);
        }
        let started = Instant::now();
        let result = self.call(forwarded, topics).await;
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(Answer::Allow { .. }) => self.metrics.allow.inc(),
            Ok(Answer::Deny(_)) => self.metrics.deny.inc(),
            Err(error) => {
                self.metrics.error.inc();
                tracing::warn!(%error, "subscribe hook failed; the subscriber is told to retry");
            }
        }
        if let Ok(answer) = result {
            self.store(key, answer);
        }
        result
    }

    async fn call(&self, forwarded: &Forwarded, topics: &[Topic]) -> Result<Answer, HookError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(
                serde_json::to_vec(&Question {
                    topics: topics.iter().map(Topic::as_str).collect(),
                })
                .expect("topics serialize"),
            );
        for (name, value) in [
            (COOKIE, &forwarded.cookie),
            (AUTHORIZATION, &forwarded.authorization),
            (ORIGIN, &forwarded.origin),
        ] {
            if let Some(value) = value.as_deref().and_then(header_value) {
                request = request.header(name, value);
            }
        }
        if let Some(value) = forwarded_for(forwarded).as_deref().and_then(header_value) {
            request = request.header("x-forwarded-for", value);
        }
        let mut response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY_BYTES {
                    break;
                }
            }
            return Ok(Answer::Allow {
                until: expires_in(&body).map(|life| Instant::now() + life),
            });
        }
        match status.as_u16() {
            code @ (401 | 403) => Ok(Answer::Deny(code)),
            _ => Err(HookError::Status(status)),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Answer> {
        let cache = self.cache.lock();
        let (answer, stored) = cache.get(key)?;
        if stored.elapsed() >= self.cache_for {
            return None;
        }
        // An allowance whose stream life has run out is asked again.
        match answer {
            Answer::Allow { until: Some(until) } if *until <= Instant::now() => None,
            answer => Some(*answer),
        }
    }

    fn store(&self, key: [u8; 32], answer: Answer) {
        if self.cache_for.is_zero() {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, stored)| stored.elapsed() < self.cache_for);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (answer, Instant::now()));
    }
}

/// The stream life an allowing answer's body asks for, if any. A body that
/// is not the expected JSON allows without a bound.
fn expires_in(body: &[u8]) -> Option<Duration> {
    let allowed: Allowed = serde_json::from_slice(body).ok()?;
    let seconds = allowed.expires_in?;
    Some(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX / 4))
}

/// `X-Forwarded-For` for the hook: the incoming value with the client's
/// address appended, or just the address.
fn forwarded_for(forwarded: &Forwarded) -> Option<Vec<u8>> {
    let peer = forwarded.peer.map(|ip| ip.to_string());
    match (&forwarded.forwarded_for, peer) {
        (Some(incoming), Some(peer)) => {
            let mut value = incoming.clone();
            value.extend_from_slice(b", ");
            value.extend_from_slice(peer.as_bytes());
            Some(value)
        }
        (Some(incoming), None) => Some(incoming.clone()),
        (None, peer) => peer.map(String::into_bytes),
    }
}

fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// The cache key of a question: the credentials and the topics, each
/// length-prefixed so no two questions share an encoding.
fn cache_key(forwarded: &Forwarded, topics: &[Topic]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [&forwarded.cookie, &forwarded.authorization] {
        match part {
            Some(bytes) => {
                digest.update([1]);
                digest.update((bytes.len() as u64).to_be_bytes());
                digest.update(bytes);
            }
            None => digest.update([0]),
        }
    }
    let mut names: Vec<&str> = topics.iter().map(Topic::as_str).collect();
    names.sort_unstable();
    for name in names {
        digest.update((name.len() as u64).to_be_bytes());
        digest.update(name.as_bytes());
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let mut forwarded = Forwarded {
            peer: Some("127.0.0.1".parse().unwrap()),
            ..Forwarded::default()
        };
        assert_eq!(forwarded_for(&forwarded).unwrap(), b"127.0.0.1");
        forwarded.forwarded_for = Some(b"203.0.113.9".to_vec());
        assert_eq!(
            forwarded_for(&forwarded).unwrap(),
            b"203.0.113.9, 127.0.0.1"
        );
    }

    #[test]
    fn expires_in_is_read_from_a_json_body_only() {
        assert_eq!(
            expires_in(br#"{"expires_in": 30}"#),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            expires_in(br#"{"expires_in": 1.5, "user": "x"}"#),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(expires_in(br#"{"expires_in": -4}"#), Some(Duration::ZERO));
        assert_eq!(expires_in(b""), None);
        assert_eq!(expires_in(b"ok"), None);
        assert_eq!(expires_in(br#"{"user": "x"}"#), None);
    }

    #[test]
    fn cache_keys_separate_credentials_and_ignore_topic_order() {
        let topics = |names: &[&str]| -> Vec<Topic> {
            names.iter().map(|n| Topic::new(n).unwrap()).collect()
        };
        let with = |cookie: &[u8], authorization: Option<&[u8]>| Forwarded {
            cookie: Some(cookie.to_vec()),
            authorization: authorization.map(<[u8]>::to_vec),
            ..Forwarded::default()
        };
        let a = cache_key(&with(b"s=1", None), &topics(&["a", "b"]));
        assert_eq!(a, cache_key(&with(b"s=1", None), &topics(&["b", "a"])));
        assert_ne!(a, cache_key(&with(b"s=2", None), &topics(&["a", "b"])));
        assert_ne!(a, cache_key(&with(b"s=1", Some(b"")), &topics(&["a", "b"])));
        assert_ne!(a, cache_key(&with(b"s=1", None), &topics(&["a"])));
        // The origin and the address do not make a request someone else.
        let mut moved = with(b"s=1", None);
        moved.peer = Some("10.0.0.1".parse().unwrap());
        moved.origin = Some(b"https://app.example".to_vec());
        assert_eq!(a, cache_key(&moved, &topics(&["a", "b"])));
    }
}
