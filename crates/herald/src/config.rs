//! Configuration: the typed [`Settings`] every other module trusts.
//!
//! Sources, lowest precedence first: built-in defaults, `config/herald.toml`
//! when present in the working directory, the file given by `--config`, then
//! `HERALD__SECTION__KEY` environment variables (lists comma-separated). The
//! raw values are validated once, before any port is bound, and every error
//! names its key.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use herald_broker::{HistorySettings, RedisSettings, RedisTopology, Topic};
use serde::Deserialize;

/// The shipped configuration file, read when it exists in the working
/// directory.
pub const SHIPPED_FILE: &str = "config/herald.toml";

/// Validated settings of a node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTP server and stream lifecycle.
    pub server: ServerSettings,
    /// How to reach Redis; `None` for the embedded broker.
    pub redis: Option<RedisSettings>,
    /// Per-topic history.
    pub history: HistorySettings,
    /// Request and stream limits.
    pub limits: Limits,
    /// Publisher and subscriber authentication.
    pub auth: AuthSettings,
    /// Browser origins allowed to subscribe.
    pub cors_allowed_origins: Vec<String>,
    /// Log output.
    pub log: LogSettings,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// SSE connections per node.
    pub max_connections: usize,
    /// Comment line on idle streams this often.
    pub heartbeat_interval: Duration,
    /// `retry:` sent to clients at stream start.
    pub retry: Duration,
    /// How long SIGTERM spreads closing streams.
    pub drain_timeout: Duration,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Serve the demo page at `/` (default: on for the embedded broker, off
    /// for cluster nodes).
    pub demo: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of one event's data.
    pub max_payload_bytes: usize,
    /// Bytes of one publish request body.
    pub max_request_bytes: usize,
    /// Topics in one subscribe.
    pub max_topics_per_connection: usize,
    /// Events queued per connection before it is closed as too slow.
    pub client_buffer_events: usize,
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// API keys accepted for publishing.
    pub publish_keys: Vec<String>,
    /// HS256 secret for publisher and subscriber JWTs.
    pub jwt_secret: Option<String>,
    /// PEM file with an RSA or EC public key for RS256/ES256 JWTs.
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// Topic patterns anyone may subscribe to.
    pub public_topics: Vec<String>,
    /// Accept subscriber tokens in the `access_token` query parameter.
    pub query_token: bool,
    /// An identity provider's JWKS, for RS256/ES256 tokens naming a `kid`.
    pub jwks_url: Option<reqwest::Url>,
    /// How often the JWKS is fetched again.
    pub jwks_refresh: Duration,
    /// The `iss` every token must carry, when set.
    pub jwt_issuer: Option<String>,
    /// An `aud` every token must carry, when set.
    pub jwt_audience: Option<String>,
    /// Topic templates with `{sub}` any valid subscriber token may open.
    pub user_topics: Vec<String>,
    /// The application's endpoint that authorizes subscribe requests.
    pub subscribe_hook_url: Option<reqwest::Url>,
    /// How long a hook call may take.
    pub subscribe_hook_timeout: Duration,
    /// How long a hook's `2xx`, `401` or `403` is reused; zero disables it.
    pub subscribe_hook_cache: Duration,
}

impl AuthSettings {
    /// True when publishing needs no credentials.
    pub fn publishing_is_open(&self) -> bool {
        self.publish_keys.is_empty()
            && self.jwt_secret.is_none()
            && self.jwt_public_key_file.is_none()
            && self.jwks_url.is_none()
    }
}

impl Default for Settings {
    /// The settings of a node started with no configuration at all.
    fn default() -> Self {
        validate(RawConfig::default()).expect("the defaults are valid")
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        validate_auth(RawAuth::default()).expect("the default [auth] is valid")
    }
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// One JSON object per line instead of human-readable lines.
    pub json: bool,
    /// A `tracing` filter such as `info` or `herald=debug`; `RUST_LOG`
    /// overrides it.
    pub level: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    redis: RawRedis,
    history: RawHistory,
    limits: RawLimits,
    auth: RawAuth,
    cors: RawCors,
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    bind: String,
    max_connections: usize,
    heartbeat_interval: String,
    retry: String,
    drain_timeout: String,
    workers: usize,
    demo: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRedis {
    url: String,
    sentinel_nodes: Vec<String>,
    sentinel_master: String,
    sentinel_password: String,
    cluster_nodes: Vec<String>,
    username: String,
    password: String,
    wait_replicas: u32,
    wait_timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHistory {
    max_events: usize,
    ttl: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_payload_bytes: usize,
    max_request_bytes: usize,
    max_topics_per_connection: usize,
    client_buffer_events: usize,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    publish_keys: Vec<String>,
    jwt_secret: String,
    jwt_public_key_file: String,
    public_topics: Vec<String>,
    query_token: bool,
    jwks_url: String,
    jwks_refresh: String,
    jwt_issuer: String,
    jwt_audience: String,
    user_topics: Vec<String>,
    subscribe_hook_url: String,
    subscribe_hook_timeout: String,
    subscribe_hook_cache: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCors {
    allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    format: String,
    level: String,
}

// The defaults, in one place; `config/herald.toml` documents the same values.
impl Default for RawServer {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_connections: 100_000,
            heartbeat_interval: "15s".into(),
            retry: "2s".into(),
            drain_timeout: "10s".into(),
            workers: 0,
            demo: None,
        }
    }
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            url: String::new(),
            sentinel_nodes: Vec::new(),
            sentinel_master: String::new(),
            sentinel_password: String::new(),
            cluster_nodes: Vec::new(),
            username: String::new(),
            password: String::new(),
            wait_replicas: 0,
            wait_timeout: "1s".into(),
        }
    }
}

impl Default for RawHistory {
    fn default() -> Self {
        Self {
            max_events: 1000,
            ttl: "1h".into(),
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 65_536,
            max_request_bytes: 1_048_576,
            max_topics_per_connection: 64,
            client_buffer_events: 1024,
        }
    }
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            publish_keys: Vec::new(),
            jwt_secret: String::new(),
            jwt_public_key_file: String::new(),
            public_topics: vec!["*".into()],
            query_token: true,
            jwks_url: String::new(),
            jwks_refresh: "5m".into(),
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            user_topics: Vec::new(),
            subscribe_hook_url: String::new(),
            subscribe_hook_timeout: "2s".into(),
            subscribe_hook_cache: "30s".into(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "human".into(),
            level: "info".into(),
        }
    }
}

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 6] = [
    "auth.publish_keys",
    "auth.public_topics",
    "auth.user_topics",
    "cors.allowed_origins",
    "redis.sentinel_nodes",
    "redis.cluster_nodes",
];

/// Loads and validates the configuration.
///
/// # Errors
///
/// A readable message naming the file or key at fault.
pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
    let mut builder = config::Config::builder();
    if Path::new(SHIPPED_FILE).is_file() {
        builder = builder.add_source(config::File::with_name(SHIPPED_FILE).required(true));
    }
    if let Some(file) = file {
        if !file.is_file() {
            bail!("config file {} does not exist", file.display());
        }
        builder = builder.add_source(config::File::from(file).required(true));
    }
    let mut env = config::Environment::with_prefix("HERALD")
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .try_parsing(true);
    for key in LIST_KEYS {
        env = env.with_list_parse_key(key);
    }
    let raw: RawConfig = builder
        .add_source(env)
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| anyhow!("invalid configuration: {e}"))?;
    validate(raw)
}

fn validate(raw: RawConfig) -> anyhow::Result<Settings> {
    let server = ServerSettings {
        bind: parse_bind(&raw.server.bind)?,
        max_connections: positive("server.max_connections", raw.server.max_connections)?,
        heartbeat_interval: duration("server.heartbeat_interval", &raw.server.heartbeat_interval)?,
        retry: duration("server.retry", &raw.server.retry)?,
        drain_timeout: duration_or_zero("server.drain_timeout", &raw.server.drain_timeout)?,
        workers: raw.server.workers,
        demo: false,
    };
    let redis = redis_settings(raw.redis)?;
    let server = ServerSettings {
        demo: raw.server.demo.unwrap_or(redis.is_none()),
        ..server
    };
    let history = HistorySettings {
        max_events: positive("history.max_events", raw.history.max_events)?,
        ttl: duration("history.ttl", &raw.history.ttl)?,
    };
    let limits = Limits {
        max_payload_bytes: positive("limits.max_payload_bytes", raw.limits.max_payload_bytes)?,
        max_request_bytes: positive("limits.max_request_bytes", raw.limits.max_request_bytes)?,
        max_topics_per_connection: positive(
            "limits.max_topics_per_connection",
            raw.limits.max_topics_per_connection,
        )?,
        client_buffer_events: positive(
            "limits.client_buffer_events",
            raw.limits.client_buffer_events,
        )?,
    };
    let log = LogSettings {
        json: match raw.log.format.as_str() {
            "human" => false,
            "json" => true,
            other => bail!("log.format: {other:?} must be \"human\" or \"json\""),
        },
        level: raw.log.level,
    };
    let auth = validate_auth(raw.auth)?;
    Ok(Settings {
        server,
        redis,
        history,
        limits,
        auth,
        cors_allowed_origins: non_empty_items("cors.allowed_origins", raw.cors.allowed_origins)?,
        log,
    })
}

fn validate_auth(raw: RawAuth) -> anyhow::Result<AuthSettings> {
    let user_topics = non_empty_items("auth.user_topics", raw.user_topics)?;
    for template in &user_topics {
        // The template must be a topic pattern whatever `sub` is put in.
        let sample = template.replace("{sub}", "sub");
        let name = sample.strip_suffix('*').unwrap_or(&sample);
        if template.matches("{sub}").count() != 1
            || (!name.is_empty() && Topic::new(name).is_err())
            || name.contains('*')
        {
            bail!(
                "auth.user_topics: {template:?} must name {{sub}} once and otherwise be a topic \
                 or a topic prefix followed by *, like \"user.{{sub}}\" or \"user.{{sub}}.*\""
            );
        }
    }
    Ok(AuthSettings {
        publish_keys: non_empty_items("auth.publish_keys", raw.publish_keys)?,
        jwt_secret: Some(raw.jwt_secret).filter(|s| !s.is_empty()),
        jwt_public_key_file: Some(raw.jwt_public_key_file)
            .filter(|s| !s.trim().is_empty())
            .map(std::path::PathBuf::from),
        public_topics: non_empty_items("auth.public_topics", raw.public_topics)?,
        query_token: raw.query_token,
        jwks_url: http_url("auth.jwks_url", &raw.jwks_url)?,
        jwks_refresh: duration("auth.jwks_refresh", &raw.jwks_refresh)?,
        jwt_issuer: Some(raw.jwt_issuer).filter(|s| !s.is_empty()),
        jwt_audience: Some(raw.jwt_audience).filter(|s| !s.is_empty()),
        user_topics,
        subscribe_hook_url: http_url("auth.subscribe_hook_url", &raw.subscribe_hook_url)?,
        subscribe_hook_timeout: duration(
            "auth.subscribe_hook_timeout",
            &raw.subscribe_hook_timeout,
        )?,
        subscribe_hook_cache: duration_or_zero(
            "auth.subscribe_hook_cache",
            &raw.subscribe_hook_cache,
        )?,
    })
}

/// An optional `http://` or `https://` URL.
fn http_url(key: &str, text: &str) -> anyhow::Result<Option<reqwest::Url>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let url =
        reqwest::Url::parse(text).map_err(|e| anyhow!("{key}: {text:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("{key}: {text:?} must be an http:// or https:// URL with a host");
    }
    Ok(Some(url))
}

/// The Redis topology: at most one of `redis.url`, `redis.sentinel_nodes`
/// and `redis.cluster_nodes`, with the keys that belong to it; none means
/// the embedded broker.
fn redis_settings(raw: RawRedis) -> anyhow::Result<Option<RedisSettings>> {
    let url = raw.url.trim().to_owned();
    let sentinel_nodes = redis_urls("redis.sentinel_nodes", raw.sentinel_nodes)?;
    let cluster_nodes = redis_urls("redis.cluster_nodes", raw.cluster_nodes)?;
    let text = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let sentinel_master = text(raw.sentinel_master);
    let sentinel_password = text(raw.sentinel_password);
    let username = text(raw.username);
    let password = text(raw.password);

    let chosen: Vec<&str> = [
        (!url.is_empty()).then_some("redis.url"),
        (!sentinel_nodes.is_empty()).then_some("redis.sentinel_nodes"),
        (!cluster_nodes.is_empty()).then_some("redis.cluster_nodes"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if chosen.len() > 1 {
        bail!(
            "{}: set only one Redis topology (a standalone primary, Sentinel, or Cluster)",
            chosen.join(", ")
        );
    }
    if sentinel_nodes.is_empty() {
        if sentinel_master.is_some() {
            bail!("redis.sentinel_master: needs redis.sentinel_nodes (the sentinels to ask)");
        }
        if sentinel_password.is_some() {
            bail!("redis.sentinel_password: needs redis.sentinel_nodes (the sentinels it is for)");
        }
    }
    if username.is_some() && password.is_none() {
        bail!("redis.username: needs redis.password");
    }
    let wait_timeout = duration("redis.wait_timeout", &raw.wait_timeout)?;
    if wait_timeout > Duration::from_secs(60) {
        bail!(
            "redis.wait_timeout: {:?} is longer than 60s; a publish would hang that long",
            raw.wait_timeout
        );
    }
    let topology = if !url.is_empty() {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            bail!("redis.url: {url:?} must start with redis:// or rediss://, or be empty");
        }
        if username.is_some() || password.is_some() {
            bail!(
                "redis.username, redis.password: apply to Sentinel and Cluster modes; \
                 put a standalone primary's credentials in redis.url (redis://user:password@host:port)"
            );
        }
        RedisTopology::Standalone { url }
    } else if !sentinel_nodes.is_empty() {
        let Some(master) = sentinel_master else {
            bail!("redis.sentinel_master: required with redis.sentinel_nodes (the master name the sentinels monitor)");
        };
        RedisTopology::Sentinel {
            nodes: sentinel_nodes,
            master,
            sentinel_password,
        }
    } else if !cluster_nodes.is_empty() {
        RedisTopology::Cluster {
            nodes: cluster_nodes,
        }
    } else {
        if username.is_some() || password.is_some() {
            bail!(
                "redis.username, redis.password: need redis.sentinel_nodes or redis.cluster_nodes"
            );
        }
        if raw.wait_replicas > 0 {
            bail!("redis.wait_replicas: needs Redis (redis.url, redis.sentinel_nodes or redis.cluster_nodes); the embedded broker has no replicas");
        }
        return Ok(None);
    };
    Ok(Some(RedisSettings {
        topology,
        username,
        password,
        wait_replicas: raw.wait_replicas,
        wait_timeout,
    }))
}

/// A list of Redis node URLs: each `redis://host:port` or `rediss://…`,
/// all with the same scheme, without credentials (those are separate
/// keys).
fn redis_urls(key: &str, items: Vec<String>) -> anyhow::Result<Vec<String>> {
    let items = non_empty_items(key, items)?;
    for item in &items {
        let Some(rest) = item
            .strip_prefix("redis://")
            .or_else(|| item.strip_prefix("rediss://"))
        else {
            bail!("{key}: {item:?} must start with redis:// or rediss://");
        };
        if rest.contains('@') {
            bail!("{key}: {item:?} must not carry credentials; use redis.username / redis.password (and redis.sentinel_password for sentinels)");
        }
        let host_port = rest.trim_end_matches('/');
        let port_ok = host_port.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            bail!("{key}: {item:?} must be redis://host:port");
        }
    }
    if let Some(first) = items.first() {
        let tls = first.starts_with("rediss://");
        if items.iter().any(|i| i.starts_with("rediss://") != tls) {
            bail!("{key}: mixes redis:// and rediss://; use one scheme for every node");
        }
    }
    Ok(items)
}

/// Accepts `host:port`, `[v6]:port` and `:port` (all interfaces).
fn parse_bind(text: &str) -> anyhow::Result<SocketAddr> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| {
            format!("server.bind: {text:?} is not an address like 127.0.0.1:8080 or :0")
        })
}

fn duration_or_zero(key: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|e| anyhow!("{key}: {text:?} is not a duration like \"15s\" or \"500ms\" ({e})"))
}

fn duration(key: &str, text: &str) -> anyhow::Result<Duration> {
    let value = duration_or_zero(key, text)?;
    if value.is_zero() {
        bail!("{key}: must be longer than zero");
    }
    Ok(value)
}

fn positive(key: &str, value: usize) -> anyhow::Result<usize> {
    if value == 0 {
        bail!("{key}: must be at least 1");
    }
    Ok(value)
}

fn non_empty_items(key: &str, items: Vec<String>) -> anyhow::Result<Vec<String>> {
    let items: Vec<String> = items.into_iter().map(|s| s.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        bail!("{key}: entries must not be empty");
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let settings = validate(RawConfig::default()).unwrap();
        assert_eq!(settings.server.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.server.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(settings.history.ttl, Duration::from_secs(3600));
        assert!(settings.redis.is_none());
        assert!(settings.auth.publishing_is_open());
    }

    #[test]
    fn colon_port_binds_all_interfaces() {
        assert_eq!(parse_bind(":0").unwrap(), "0.0.0.0:0".parse().unwrap());
    }

    #[test]
    fn errors_name_their_key() {
        let mut raw = RawConfig::default();
        raw.server.retry = "soon".into();
        let error = validate(raw).unwrap_err().to_string();
        assert!(error.starts_with("server.retry:"), "{error}");

        let mut raw = RawConfig::default();
        raw.limits.client_buffer_events = 0;
        let error = validate(raw).unwrap_err().to_string();
        assert!(error.starts_with("limits.client_buffer_events:"), "{error}");
    }

    fn auth_error(edit: impl FnOnce(&mut RawAuth)) -> String {
        let mut raw = RawConfig::default();
        edit(&mut raw.auth);
        validate(raw).unwrap_err().to_string()
    }

    #[test]
    fn identity_keys_are_checked_and_jwks_closes_publishing() {
        for bad in ["ftp://id.example/jwks", "id.example/jwks", "http://"] {
            let error = auth_error(|a| a.jwks_url = bad.into());
            assert!(error.starts_with("auth.jwks_url:"), "{error}");
        }
        let error = auth_error(|a| a.subscribe_hook_url = "localhost:3000".into());
        assert!(error.starts_with("auth.subscribe_hook_url:"), "{error}");
        for bad in ["user.*", "user.{sub}.{sub}", "user {sub}", "{sub}*.x"] {
            let error = auth_error(|a| a.user_topics = vec![bad.into()]);
            assert!(error.starts_with("auth.user_topics:"), "{bad}: {error}");
        }
        let error = auth_error(|a| a.subscribe_hook_timeout = "0s".into());
        assert!(error.starts_with("auth.subscribe_hook_timeout:"), "{error}");

        let mut raw = RawConfig::default();
        raw.auth.jwks_url = "https://id.example/.well-known/jwks.json".into();
        raw.auth.user_topics = vec!["user.{sub}".into(), "user.{sub}.*".into(), "{sub}".into()];
        raw.auth.subscribe_hook_cache = "0s".into();
        let settings = validate(raw).unwrap();
        assert!(!settings.auth.publishing_is_open());
        assert_eq!(settings.auth.jwks_refresh, Duration::from_secs(300));
        assert_eq!(settings.auth.subscribe_hook_timeout, Duration::from_secs(2));
        assert!(settings.auth.subscribe_hook_cache.is_zero());
    }

    fn redis_error(edit: impl FnOnce(&mut RawRedis)) -> String {
        let mut raw = RawConfig::default();
        edit(&mut raw.redis);
        validate(raw).unwrap_err().to_string()
    }

    #[test]
    fn one_redis_topology_at_most() {
        let error = redis_error(|r| {
            r.url = "redis://127.0.0.1:6379".into();
            r.cluster_nodes = vec!["redis://127.0.0.1:7000".into()];
        });
        assert!(
            error.starts_with("redis.url, redis.cluster_nodes:"),
            "{error}"
        );
        let error = redis_error(|r| {
            r.sentinel_nodes = vec!["redis://127.0.0.1:26379".into()];
            r.cluster_nodes = vec!["redis://127.0.0.1:7000".into()];
            r.sentinel_master = "m".into();
        });
        assert!(
            error.starts_with("redis.sentinel_nodes, redis.cluster_nodes:"),
            "{error}"
        );
    }

    #[test]
    fn bad_redis_combinations_name_their_keys() {
        type Edit = Box<dyn FnOnce(&mut RawRedis)>;
        let cases: [(&str, Edit); 7] = [
            (
                "redis.sentinel_master:",
                Box::new(|r| r.sentinel_nodes = vec!["redis://h:26379".into()]),
            ),
            (
                "redis.sentinel_master:",
                Box::new(|r| r.sentinel_master = "m".into()),
            ),
            (
                "redis.username, redis.password:",
                Box::new(|r| {
                    r.url = "redis://h:1".into();
                    r.password = "p".into();
                }),
            ),
            (
                "redis.username:",
                Box::new(|r| {
                    r.cluster_nodes = vec!["redis://h:1".into()];
                    r.username = "u".into();
                }),
            ),
            ("redis.wait_replicas:", Box::new(|r| r.wait_replicas = 1)),
            (
                "redis.cluster_nodes:",
                Box::new(|r| r.cluster_nodes = vec!["redis://h:1".into(), "rediss://h:2".into()]),
            ),
            (
                "redis.cluster_nodes:",
                Box::new(|r| r.cluster_nodes = vec!["h:1".into()]),
            ),
        ];
        for (key, edit) in cases {
            let error = redis_error(edit);
            assert!(error.starts_with(key), "{key}: {error}");
        }
    }

    #[test]
    fn sentinel_and_cluster_settings_are_read() {
        let mut raw = RawConfig::default();
        raw.redis.sentinel_nodes = vec!["redis://a:26379".into(), " redis://b:26379 ".into()];
        raw.redis.sentinel_master = "herald".into();
        raw.redis.password = "secret".into();
        raw.redis.wait_replicas = 1;
        let redis = validate(raw).unwrap().redis.unwrap();
        assert_eq!(
            redis.topology,
            RedisTopology::Sentinel {
                nodes: vec!["redis://a:26379".into(), "redis://b:26379".into()],
                master: "herald".into(),
                sentinel_password: None,
            }
        );
        assert_eq!(redis.password.as_deref(), Some("secret"));
        assert_eq!(
            (redis.wait_replicas, redis.wait_timeout),
            (1, Duration::from_secs(1))
        );
    }
}
