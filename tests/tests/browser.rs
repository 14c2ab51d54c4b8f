//! The demo page in a real browser (docs/protocol.md §1): Debian's
//! headless Chromium, driven through chromedriver over WebDriver, loads `/`
//! from a node, subscribes with the browser's own `EventSource` to the topic
//! named in its URL, shows events published with the API and with the
//! page's Publish button, and, when the node restarts on the same port,
//! reconnects by itself with `Last-Event-ID` and shows the event it missed,
//! exactly once.
//!
//! The node runs in Redis mode (demo page turned on), so the history, and
//! with it the browser's cursor, survives the restart: an embedded node
//! would come back with an empty history and could only answer
//! `herald.resync`. The missed event is published while the node is down,
//! through a second node on the same Redis.
//!
//! A browser's own `EventSource` is also held off by a failing subscribe
//! hook (herald's retry-later answer, docs/protocol.md §1) and must come
//! back by itself until the hook allows it.
//!
//! Screenshots go to `target/test-artifacts/`.

use std::{path::PathBuf, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use herald_testkit::{
    eventually, restartable_port, test_artifact_dir, Browser, HookBehavior, HookServer, Node,
    NodeBuilder, RedisServer, TIMEOUT,
};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::time::Instant;

/// How often the DOM is read again while waiting for it to change.
const POLL: Duration = Duration::from_millis(50);

/// What the page shows, read in one script so that every field is from the
/// same moment. Events are oldest first (the page lists newest first).
#[derive(Debug, Clone, PartialEq)]
struct PageState {
    topic: String,
    status: String,
    state: String,
    reconnects: u64,
    last_id: String,
    publish_result: String,
    /// (`data-type`, `pre.data` text) of each `li.event`.
    events: Vec<(String, String)>,
}

impl PageState {
    /// How many shown events carry `data`.
    fn count(&self, data: &str) -> usize {
        self.events.iter().filter(|(_, d)| d == data).count()
    }
}

const READ_STATE: &str = r##"
const $ = (id) => document.getElementById(id);
if (!$("status")) return null;
return {
  topic: $("topic").value,
  status: $("status").textContent,
  state: $("status").dataset.state,
  reconnects: Number($("reconnects").textContent),
  lastId: $("last-id").textContent,
  publishResult: $("publish-result").textContent,
  events: Array.from(document.querySelectorAll("#events li.event")).reverse().map(
    (li) => [li.dataset.type, li.querySelector("pre.data").textContent]),
};
"##;

/// A WebDriver session on the demo page.
struct DemoPage {
    client: Client,
    name: &'static str,
}

impl DemoPage {
    /// Opens a session on `browser` and loads `url`.
    async fn open(browser: &Browser, url: &str, name: &'static str) -> Self {
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(browser.capabilities())
            .connect(browser.webdriver_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "WebDriver session on {}: {e}; chromedriver log {}",
                    browser.webdriver_url(),
                    browser.chromedriver_log().display()
                )
            });
        client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
        Self { client, name }
    }

    async fn state(&self) -> Option<PageState> {
        let value = self
            .client
            .execute(READ_STATE, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("reading the page: {e}"));
        if value.is_null() {
            return None;
        }
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        let events = value["events"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|pair| {
                        let field = |i: usize| pair[i].as_str().unwrap_or_default().to_owned();
                        (field(0), field(1))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(PageState {
            topic: text("topic"),
            status: text("status"),
            state: text("state"),
            reconnects: value["reconnects"].as_u64().unwrap_or_default(),
            last_id: text("lastId"),
            publish_result: text("publishResult"),
            events,
        })
    }

    /// Polls the page until `done` accepts what it shows, and returns that.
    ///
    /// # Panics
    ///
    /// After [`TIMEOUT`], with the last state seen and a screenshot.
    async fn wait_for(&self, what: &str, done: impl Fn(&PageState) -> bool) -> PageState {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let state = self.state().await;
            if let Some(state) = state.as_ref().filter(|s| done(s)) {
                return state.clone();
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("failure").await;
                panic!(
                    "the page did not show {what} within {TIMEOUT:?}; it shows {state:?}; \
                     screenshot {}",
                    shot.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves a PNG of the page as `target/test-artifacts/<name>-<label>.png`
    /// and prints the path.
    async fn screenshot(&self, label: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("taking a screenshot: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = test_artifact_dir().join(format!("{}-{label}.png", self.name));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The shown events as WebDriver reads them element by element
    /// (`#events li.event`: its `data-type`, its `pre.data` text), oldest
    /// first.
    async fn events_by_element(&self) -> Vec<(String, String)> {
        let items = self
            .client
            .find_all(Locator::Css("#events li.event"))
            .await
            .expect("finding #events li.event");
        let mut events = Vec::new();
        for item in items.iter().rev() {
            let kind = item.attr("data-type").await.expect("data-type");
            let data = item
                .find(Locator::Css("pre.data"))
                .await
                .expect("li.event has a pre.data")
                .text()
                .await
                .expect("pre.data text");
            events.push((kind.unwrap_or_default(), data));
        }
        events
    }

    /// Types `data` into the publish box and clicks Publish.
    async fn publish_with_button(&self, data: &str) {
        let input = self
            .client
            .find(Locator::Id("data"))
            .await
            .expect("the #data box");
        input.clear().await.expect("clearing #data");
        input.send_keys(data).await.expect("typing into #data");
        self.client
            .find(Locator::Id("publish"))
            .await
            .expect("the #publish button")
            .click()
            .await
            .expect("clicking #publish");
    }
}

/// `(type, data)` pairs of plain messages, for comparing with the page.
fn messages(data: &[&str]) -> Vec<(String, String)> {
    data.iter()
        .map(|d| ("message".to_owned(), (*d).to_owned()))
        .collect()
}

#[tokio::test]
async fn demo_page_shows_events_and_resumes_after_its_node_restarts() {
    let redis = RedisServer::start().await;
    let port = restartable_port();
    let demo_node: NodeBuilder = Node::builder()
        .env("HERALD__REDIS__URL", &redis.url())
        .env("HERALD__SERVER__BIND", &format!("127.0.0.1:{port}"))
        .env("HERALD__SERVER__DEMO", "true")
        // Quick reconnects, and a drain that ends at once.
        .env("HERALD__SERVER__RETRY", "300ms")
        .env("HERALD__SERVER__DRAIN_TIMEOUT", "1s");
    let relay_node = Node::builder().env("HERALD__REDIS__URL", &redis.url());
    let (mut node, relay, browser) = tokio::join!(
        demo_node.clone().start(),
        relay_node.start(),
        Browser::start()
    );

    let topic = "browser-demo";
    let page = DemoPage::open(
        &browser,
        &format!("{}/?topic={topic}", node.url()),
        "demo-page",
    )
    .await;
    let opened = page
        .wait_for("status open", |s| s.status == "open" && s.state == "open")
        .await;
    assert_eq!(opened.topic, topic, "the page takes its topic from the URL");
    assert_eq!(opened.reconnects, 0);

    let from_api = "hello from the API";
    let api_id = node.api().publish_ok(topic, json!(from_api)).await;
    page.wait_for("the API's event", |s| s.count(from_api) == 1)
        .await;

    let typed = "typed into the page";
    page.publish_with_button(typed).await;
    let shown = page
        .wait_for("the page's own publish", |s| {
            s.count(typed) == 1 && s.publish_result.starts_with("stored as ")
        })
        .await;
    let typed_id = shown.publish_result["stored as ".len()..].to_owned();
    assert_ne!(typed_id, api_id);
    assert_eq!(shown.last_id, typed_id, "#last-id is the newest event's");
    assert_eq!(page.events_by_element().await, messages(&[from_api, typed]));
    page.screenshot("event").await;

    // Restart: a clean stop (the drain closes the page's stream), an event
    // published elsewhere while nothing listens on the port, and a new node
    // on the same port and Redis.
    let status = node.terminate(TIMEOUT).await;
    assert!(
        status.success(),
        "the node exits 0 after its drain: {status:?}"
    );
    page.wait_for("status connecting while the node is down", |s| {
        s.state == "connecting"
    })
    .await;
    let missed = "published while the node was down";
    relay.api().publish_ok(topic, json!(missed)).await;
    node = demo_node.start().await;
    assert_eq!(node.addr().port(), port, "the new node took the same port");

    let resumed = page
        .wait_for("the missed event after a reconnect", |s| {
            s.state == "open" && s.reconnects >= 1 && s.count(missed) == 1
        })
        .await;
    assert_eq!(resumed.count(from_api), 1, "no replay of what it had");
    // The browser sent its Last-Event-ID and the new node replayed from
    // Redis: a resume, not a fresh subscribe that happened to be in time.
    let metrics = node.api().metrics().await;
    let resumes = |result| metrics.value("herald_resumes_total", &[("result", result)]);
    assert_eq!(
        (resumes("replayed"), resumes("resync")),
        (Some(1.0), Some(0.0)),
        "the new node's herald_resumes_total"
    );
    let after = "published after the restart";
    let after_id = node.api().publish_ok(topic, json!(after)).await;
    let last = page
        .wait_for("the event published after the restart", |s| {
            s.count(after) == 1 && s.last_id == after_id
        })
        .await;
    assert_eq!(
        last.events,
        messages(&[from_api, typed, missed, after]),
        "every event once, in order, and no herald.resync"
    );
    assert_eq!(page.events_by_element().await, last.events);
    page.screenshot("reconnected").await;

    // Ends the WebDriver session; the kit stops chromedriver and Chromium
    // (and the nodes and Redis) by PID when they drop, also on a panic.
    let _ = page.client.close().await;
}

/// Opens an `EventSource` on `topic` in the page and records what it sees
/// in `window.heraldTest`.
const OPEN_EVENT_SOURCE: &str = r##"
const [topic] = arguments;
const seen = { opens: 0, errors: 0, messages: [] };
const source = new EventSource("/v1/events?topic=" + encodeURIComponent(topic));
source.onopen = () => { seen.opens += 1; };
source.onerror = () => { seen.errors += 1; };
source.onmessage = (event) => { seen.messages.push(event.data); };
window.heraldTest = { seen, source };
"##;

/// What the page's `EventSource` has seen, and its `readyState` (0
/// connecting, 1 open, 2 closed for good).
const READ_EVENT_SOURCE: &str = r##"
const { seen, source } = window.heraldTest;
return { opens: seen.opens, errors: seen.errors, messages: seen.messages,
         readyState: source.readyState };
"##;

#[tokio::test]
async fn an_event_source_told_to_retry_by_a_failing_hook_reconnects_once_the_hook_allows() {
    // The hook fails first: herald must answer with its retry-later stream
    // (200, retry:, closed), never an error status, or the browser would
    // give up for good.
    let hook = HookServer::start(HookBehavior::Status(500));
    let node = Node::builder().config_file(&format!(
        "[server]\nretry = \"300ms\"\n\n[auth]\npublic_topics = [\"public.*\"]\n\
         subscribe_hook_url = \"{}\"\n",
        hook.url()
    ));
    let (node, browser) = tokio::join!(node.start(), Browser::start());
    // Any page of the node's own origin will do: the stream is then
    // same-origin and needs no CORS.
    let page = DemoPage::open(&browser, &format!("{}/healthz", node.url()), "hook-retry").await;
    let topic = "private.browser";
    page.client
        .execute(OPEN_EVENT_SOURCE, vec![json!(topic)])
        .await
        .unwrap_or_else(|e| panic!("opening an EventSource: {e}"));
    let read = || async {
        page.client
            .execute(READ_EVENT_SOURCE, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("reading the EventSource: {e}"))
    };
    let wait_for = |what: &'static str, done: fn(&serde_json::Value, usize) -> bool| {
        let read = &read;
        let hook = &hook;
        let page = &page;
        async move {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let seen = read().await;
                if done(&seen, hook.calls()) {
                    return seen;
                }
                if Instant::now() >= deadline {
                    let shot = page.screenshot("failure").await;
                    panic!(
                        "the EventSource did not show {what} within {TIMEOUT:?}: {seen}, \
                         {} hook calls; screenshot {}",
                        hook.calls(),
                        shot.display()
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
    };

    // Refused twice at least: it came back by itself after a refusal, and
    // is still trying (not closed for good).
    let refused = wait_for("two refused attempts", |seen, calls| {
        calls >= 2 && seen["errors"].as_u64() >= Some(2)
    })
    .await;
    assert_ne!(refused["readyState"], json!(2), "the EventSource gave up");
    assert_eq!(refused["messages"], json!([]));

    hook.set_behavior(HookBehavior::allow());
    eventually(
        TIMEOUT,
        "the browser's stream to be allowed and open",
        || async {
            let metrics = node.api().metrics().await;
            let allowed = metrics.value("herald_auth_hook_requests_total", &[("result", "allow")]);
            let open = metrics.value("herald_connections", &[]);
            (allowed >= Some(1.0) && open == Some(1.0)).then_some(())
        },
    )
    .await;
    let data = "allowed at last";
    node.api().publish_ok(topic, json!(data)).await;
    let received = wait_for("the published event", |seen, _| {
        seen["messages"] == json!(["allowed at last"])
    })
    .await;
    assert_eq!(received["readyState"], json!(1), "{received}");
    assert_eq!(received["messages"], json!([data]));
    for asked in hook.requests() {
        assert_eq!(asked.method, "POST");
        assert_eq!(asked.topics(), [topic]);
    }
    page.screenshot("allowed").await;
    let _ = page.client.close().await;
}
