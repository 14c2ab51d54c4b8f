//! `GET /v1/events` on actix: streams requested on a connection that
//! already served another request (a reused keep-alive connection). Streams
//! that open a connection take herald's own lean path (`crate::lean_door`);
//! both share [`crate::subscribe`].

use actix_web::{web, HttpRequest, HttpResponse};

use crate::{
    actix_stream::ActixBody,
    app::Counted,
    routes::method_not_allowed,
    state::AppState,
    subscribe::{self, AnswerBody, SubscribeHead},
};

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/events")
            .route(web::get().to(handle))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn handle(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let headers = req.headers();
    let path_and_query = req.uri().path_and_query().map_or("", |p| p.as_str());
    let head = SubscribeHead::read(path_and_query, req.peer_addr().map(|a| a.ip()), |name| {
        headers.get(name).map(|v| v.as_bytes())
    });
    let received = subscribe::receive(&state, &head);
    let answer = subscribe::answer(&state.into_inner(), received).await;
    let mut response = HttpResponse::build(answer.status);
    for header in answer.headers {
        response.append_header(header);
    }
    // A stream closed by herald (drain, slow consumer) must close its TCP
    // connection too, so the client reconnects, ideally elsewhere.
    response.force_close();
    response.extensions_mut().insert(Counted);
    match answer.body {
        AnswerBody::Stream(stream) => response.streaming(ActixBody::new(stream, &req)),
        AnswerBody::Whole(body) => response.body(body),
    }
}
