//! `herald publish`: publishing from a shell (README, "The two commands").

use std::process::Output;

use herald_testkit::{herald_command, Node};

async fn herald_publish(node: &Node, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(herald_command());
    command
        .arg("publish")
        .args(args)
        .arg("--url")
        .arg(node.url());
    tokio::time::timeout(herald_testkit::TIMEOUT, command.output())
        .await
        .expect("herald publish finishes in time")
        .expect("running herald publish")
}

#[tokio::test]
async fn herald_publish_prints_the_cursor_of_an_event_subscribers_receive() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["cli"]).await;
    let output = herald_publish(
        &node,
        &[
            "--topic",
            "cli",
            "--data",
            "hello\nworld",
            "--event",
            "greeting",
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8 output");
    let id = printed.trim();
    assert!(!id.is_empty());

    let event = stream.event().await;
    assert_eq!(event.id, id);
    assert_eq!(event.event, "greeting");
    assert_eq!(event.data, "hello\nworld");
}

#[tokio::test]
async fn herald_publish_json_sends_a_json_value() {
    let node = Node::start().await;
    let mut stream = node.subscribe(&["cli"]).await;
    let output = herald_publish(
        &node,
        &[
            "--topic",
            "cli",
            "--json",
            "--data",
            r#"{ "b": [1, 2], "a": "é" }"#,
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stream.event().await.data, r#"{"b":[1,2],"a":"é"}"#);
}

#[tokio::test]
async fn herald_publish_reports_a_refusal_and_exits_non_zero() {
    let node = Node::start().await;
    let output = herald_publish(&node, &["--topic", "not valid", "--data", "x"]).await;
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("400"), "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
}
