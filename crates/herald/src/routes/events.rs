//! `GET /v1/events` on actix: streams requested on a connection that
//! already served another request (a reused keep-alive connection). Streams
//! that open a connection take herald's own lean path (`crate::native`);
//! both share [`crate::subscribe`].

use actix_web::{http::header, web, HttpRequest, HttpResponse};

use crate::{
    error::ApiError,
    routes::method_not_allowed,
    socket,
    state::AppState,
    subscribe::{self, Opened, SubscribeHead, STREAM_HEADERS},
};

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/events")
            .route(web::get().to(handle))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn handle(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let headers = req.headers();
    let head = SubscribeHead {
        query: req.query_string(),
        last_event_id: headers.get("last-event-id").map(|v| v.as_bytes()),
        authorization: headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        cookie: headers.get(header::COOKIE).map(|v| v.as_bytes()),
        origin: headers.get(header::ORIGIN).map(|v| v.as_bytes()),
        forwarded_for: headers.get("x-forwarded-for").map(|v| v.as_bytes()),
        peer: req.peer_addr().map(|addr| addr.ip()),
    };
    let request = subscribe::parse(&state, &head)?;
    let opened = subscribe::start(&state.into_inner(), request).await?;
    let mut response = HttpResponse::Ok();
    for header in STREAM_HEADERS {
        response.insert_header(header);
    }
    // A stream closed by herald (drain, slow consumer) must close its TCP
    // connection too, so the client reconnects, ideally elsewhere.
    response.force_close();
    Ok(match opened {
        Opened::Stream(mut stream) => {
            // See `crate::socket`: how a stream actix stopped polling is
            // still closed when herald closes it.
            if let Some(socket) = socket::duplicate(&req) {
                stream.on_close(move || socket::shutdown(&socket));
            }
            response.streaming(stream)
        }
        Opened::Refused(body) => response.body(body),
    })
}
