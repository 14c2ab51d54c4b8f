//! The state every request handler shares, built once before the server
//! starts (actix calls the app factory once per worker thread).

use std::sync::Arc;

use herald_broker::Broker;

use crate::{
    auth::Auth, config::Settings, lifecycle::Lifecycle, metrics::Metrics, open_streams::OpenStreams,
};

/// Shared node state, handed to handlers as `web::Data<AppState>`.
pub struct AppState {
    /// Validated configuration.
    pub settings: Settings,
    /// Where events are stored and carried.
    pub broker: Arc<dyn Broker>,
    /// The node's metrics.
    pub metrics: Metrics,
    /// Open streams.
    pub open_streams: Arc<OpenStreams>,
    /// Ready or draining.
    pub lifecycle: Arc<Lifecycle>,
    /// Who may publish and subscribe.
    pub auth: Auth,
}

impl AppState {
    /// The state of a node with `settings`, storing events in `broker`.
    /// With `auth.jwks_url` set, it starts fetching the key set, so it must
    /// run inside the Tokio runtime.
    ///
    /// # Errors
    ///
    /// When the auth settings name a key file that cannot be read, or an
    /// HTTP client cannot be built.
    pub fn new(
        settings: Settings,
        broker: Arc<dyn Broker>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            auth: Auth::new(&settings.auth, &metrics)?,
            open_streams: Arc::new(OpenStreams::new(
                settings.server.max_connections,
                metrics.clone(),
            )),
            lifecycle: Arc::new(Lifecycle::new()),
            broker,
            metrics,
            settings,
        })
    }
}
