//! `GET /openapi.yaml` serves the repository's `openapi.yaml`, and that file
//! names every route herald answers. (Whether herald's answers match it is
//! checked by `scripts/api-fuzz`, which drives schemathesis from it.)

use std::path::Path;

use herald_testkit::Node;

fn repository_spec() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[tokio::test]
async fn the_served_spec_is_the_repository_file() {
    let node = Node::start().await;
    let reply = node.api().get("/openapi.yaml").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/yaml"));
    assert!(
        reply.text == repository_spec(),
        "the binary serves an old openapi.yaml: rebuild herald (cargo build -p herald)"
    );
}

#[test]
fn the_spec_describes_every_route_and_the_problem_document() {
    let spec = repository_spec();
    assert!(spec.starts_with("openapi: 3.1"), "an OpenAPI 3.1 document");
    for path in [
        "/v1/events",
        "/v1/publish",
        "/v1/publish/batch",
        "/v1/topics/{topic}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.yaml",
        "/",
    ] {
        assert!(
            spec.lines().any(|line| line == format!("  {path}:")),
            "openapi.yaml has no path {path}"
        );
    }
    for needle in [
        "application/problem+json",
        "text/event-stream",
        "required: [type, title, status, detail]",
        "Retry-After",
        "WWW-Authenticate",
        "scheme: bearer",
        "name: herald_token",
        "name: access_token",
        "name: Last-Event-ID",
        "name: last_event_id",
        "name: lastEventId",
    ] {
        assert!(
            spec.contains(needle),
            "openapi.yaml does not mention {needle}"
        );
    }
}
