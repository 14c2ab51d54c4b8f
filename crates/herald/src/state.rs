//! The state every request handler shares, built once before the server
//! starts (actix calls the app factory once per worker thread).

use std::sync::Arc;

use herald_broker::Broker;

use crate::{
    auth::Auth, config::Settings, connections::Connections, lifecycle::Lifecycle, metrics::Metrics,
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
    pub connections: Arc<Connections>,
    /// Ready or draining.
    pub lifecycle: Arc<Lifecycle>,
    /// Who may publish and subscribe.
    pub auth: Auth,
}
