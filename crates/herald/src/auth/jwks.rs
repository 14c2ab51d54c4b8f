//! The identity provider's signing keys (a JWKS, RFC 7517), kept fresh.
//!
//! The key set is fetched when the node starts and every `auth.jwks_refresh`
//! after that; until a first fetch succeeds it is retried within seconds,
//! because every token that needs it is refused meanwhile. A token naming a
//! `kid` the set does not hold triggers one more fetch, at most once per
//! [`ON_DEMAND_INTERVAL`], so a provider rotating its keys needs no restart
//! and a client inventing `kid`s cannot turn herald into a fetch loop.
//!
//! Only signing keys herald can verify are kept: RSA keys (RS256) and P-256
//! EC keys (ES256), neither marked `"use": "enc"`. A key the crate cannot
//! read is skipped, not fatal, since providers publish key kinds herald has
//! no use for. Key material is never logged.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey,
};
use parking_lot::RwLock;
use serde::Deserialize;

/// Least time between two fetches triggered by unknown `kid`s.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set accepted.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Retry delays while no key set has ever been fetched: first, and cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(8);

/// A key that verifies tokens of one algorithm.
#[derive(Clone)]
pub struct Key {
    /// The algorithm tokens must name to use this key.
    pub algorithm: Algorithm,
    /// The public key.
    pub key: Arc<DecodingKey>,
}

/// What the key set says about a token's key.
pub enum Lookup {
    /// The keys to try (possibly none, when the `kid` names a key of
    /// another algorithm).
    Found(Vec<Key>),
    /// The set holds no key with that `kid`, even after a fresh fetch (or
    /// a fetch was not allowed yet).
    Unknown,
    /// No key set has been fetched yet.
    NotFetched,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Key>,
    all: Vec<Key>,
}

/// Why a fetch failed, for the log.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the key set is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
}

/// The key set of `auth.jwks_url`.
pub struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
    /// When the last `kid`-triggered fetch started. Held while fetching, so
    /// requests arriving meanwhile wait for its result instead of fetching
    /// again.
    on_demand: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// A key set to be fetched from `url`.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built (no TLS roots readable).
    pub fn new(url: reqwest::Url) -> reqwest::Result<Self> {
        let client = super::http_client().timeout(FETCH_TIMEOUT).build()?;
        Ok(Self {
            url,
            client,
            current: RwLock::new(None),
            on_demand: tokio::sync::Mutex::new(None),
        })
    }

    /// Fetches the set now and then every `every`, until the node stops.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        let jwks = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry = FIRST_RETRY;
            loop {
                let Some(this) = jwks.upgrade() else { return };
                let fetched = this.fetch().await;
                let fetched_once = this.current.read().is_some();
                drop(this);
                let wait = if fetched || fetched_once {
                    every
                } else {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    wait
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// The keys for a token naming `kid` (or none) and `algorithm`.
    /// A named `kid` the set lacks, or a set never fetched, triggers a
    /// fetch if the last such fetch is [`ON_DEMAND_INTERVAL`] old.
    pub async fn keys_for(&self, kid: Option<&str>, algorithm: Algorithm) -> Lookup {
        if let Some(found) = self.lookup(kid, algorithm) {
            return found;
        }
        let mut last = self.on_demand.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.lookup(kid, algorithm) {
            return found;
        }
        if last.is_none_or(|at| at.elapsed() >= ON_DEMAND_INTERVAL) {
            *last = Some(Instant::now());
            self.fetch().await;
            if let Some(found) = self.lookup(kid, algorithm) {
                return found;
            }
        }
        if self.current.read().is_some() {
            Lookup::Unknown
        } else {
            Lookup::NotFetched
        }
    }

    /// The answer from the current set, or `None` when a fetch might change
    /// it (no set yet, or an unknown `kid`).
    fn lookup(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<Lookup> {
        let set = self.current.read().clone()?;
        let keys = match kid {
            Some(kid) => vec![set.by_kid.get(kid)?.clone()],
            None => set.all.clone(),
        };
        Some(Lookup::Found(
            keys.into_iter()
                .filter(|k| k.algorithm == algorithm)
                .collect(),
        ))
    }

    /// Fetches the set and replaces the current one; on failure the current
    /// set stays. Returns whether it succeeded.
    async fn fetch(&self) -> bool {
        match self.download().await {
            Ok(set) => {
                tracing::debug!(keys = set.all.len(), url = %self.url, "fetched the JWKS");
                *self.current.write() = Some(Arc::new(set));
                true
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "cannot fetch the JWKS");
                false
            }
        }
    }

    async fn download(&self) -> Result<KeySet, FetchError> {
        let mut response = self.client.get(self.url.clone()).send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(parse(&body)?)
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The verifying keys of a JWKS document.
fn parse(body: &[u8]) -> Result<KeySet, serde_json::Error> {
    let document: Document = serde_json::from_slice(body)?;
    let mut set = KeySet::default();
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(key) = verifying_key(&jwk) else {
            continue;
        };
        if let Some(kid) = &jwk.common.key_id {
            set.by_kid.insert(kid.clone(), key.clone());
        }
        set.all.push(key);
    }
    Ok(set)
}

fn verifying_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        algorithm,
        key: Arc::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_rsa_and_p256_signing_keys_and_skips_the_rest() {
        let body = br#"{"keys": [
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"what": "not a key"}
        ]}"#;
        let set = parse(body).unwrap();
        assert_eq!(set.all.len(), 2);
        assert_eq!(set.by_kid["r1"].algorithm, Algorithm::RS256);
        assert_eq!(set.by_kid["e1"].algorithm, Algorithm::ES256);
        assert!(!set.by_kid.contains_key("enc"));
        assert!(!set.by_kid.contains_key("hmac"));
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(parse(b"{}").is_err());
        assert!(parse(b"<html>").is_err());
    }
}
