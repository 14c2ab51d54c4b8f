//! Builds the actix `App` from shared state; `main` and the tests use the
//! same function.

use actix_web::{
    body::MessageBody,
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    middleware::{from_fn, Next},
    web, App, Error,
};

use crate::{
    cors,
    metrics::{route, ROUTES},
    routes,
    state::AppState,
};

/// The application: every route, request counting, and problem+json for
/// unknown paths.
pub fn build(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let demo = state.settings.server.demo;
    App::new()
        .app_data(state)
        // The last `wrap` is the outermost: requests are counted after CORS
        // has answered or decorated them.
        .wrap(from_fn(cors::cors))
        .wrap(from_fn(count_requests))
        .configure(routes::events::configure)
        .configure(routes::publish::configure)
        .configure(routes::topics::configure)
        .configure(routes::health::configure)
        .configure(|cfg| routes::assets::configure(cfg, demo))
        .default_service(web::to(routes::not_found))
}

/// Marks a response whose request its handler counted itself (the stream
/// route, which counts on both doors the same way).
#[derive(Debug, Clone, Copy)]
pub struct Counted;

/// Counts every request by route pattern and status. The route label comes
/// from the matched pattern, never the raw path, so its values stay bounded.
async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let route = route_label(req.match_pattern().as_deref());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    // Held until the response head is ready: a drain waits for publishes in
    // flight, not for streams (whose bodies outlive this call).
    let _in_flight = state.as_ref().map(|s| s.lifecycle.request());
    let response = next.call(req).await?;
    if let Some(state) =
        state.filter(|_| response.response().extensions().get::<Counted>().is_none())
    {
        state
            .metrics
            .count_request(route, response.status().as_str());
    }
    Ok(response)
}

fn route_label(pattern: Option<&str>) -> &'static str {
    match pattern {
        Some(p) if p.starts_with("/v1/topics/") => route::TOPIC,
        Some(p) => ROUTES
            .iter()
            .find(|r| **r == p)
            .copied()
            .unwrap_or(route::OTHER),
        None => route::OTHER,
    }
}
