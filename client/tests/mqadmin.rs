//! The `mqadmin` binary against a group that creates topics on first use (as `mqbroker dev`
//! does): the cluster table, topic commands, message queries, the produce benchmark, and
//! failures.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{GROUP, Group};
use raftmq_client::{Admin, Message, MessageQuery, Producer};

/// Runs `mqadmin` with `args` (off the async threads, which serve the group).
async fn mqadmin(args: &[&str]) -> anyhow::Result<Output> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mqadmin")).args(&args).env("RUST_LOG", "error").output()
    })
    .await??;
    Ok(out)
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqadmin_prints_the_cluster_table_and_manages_topics() -> anyhow::Result<()> {
    let group = Group::start(Some(8)).await?;
    let leader = group.settled(Duration::from_secs(5)).await?;
    let endpoints = group.endpoints();

    let out = mqadmin(&["--endpoints", &endpoints, "cluster", "list"]).await?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "cluster list failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    for column in ["GROUP", "NODE", "ROLE", "TERM", "LEADER", "COMMIT", "LAST LOG", "APPLIED", "PURGED", "CLIENT"] {
        assert!(lines[0].contains(column), "no {column} column: {stdout}");
    }
    assert_eq!(lines.len(), 4, "a header and three members: {stdout}");
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], GROUP, "{line}");
        assert_eq!(cells[1], (i + 1).to_string(), "{line}");
        assert_eq!(cells[4], leader.to_string(), "every member names the leader: {line}");
        assert!(line.contains(&group.endpoint(i as u64 + 1)), "{line}");
    }
    assert_eq!(lines[1..].iter().filter(|l| l.split_whitespace().nth(2) == Some("LEADER")).count(), 1);

    let out =
        mqadmin(&["--endpoints", &endpoints, "topic", "create", "payments", "--queues", "3", "--types", "NORMAL,FIFO"])
            .await?;
    assert!(out.status.success(), "topic create failed: {}", text(&out).1);
    let out = mqadmin(&["--endpoints", &endpoints, "topic", "list"]).await?;
    let (stdout, _) = text(&out);
    let row = stdout.lines().find(|l| l.starts_with("payments")).unwrap_or_default().to_string();
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["payments", "3", "6", "(read-write)", "NORMAL,FIFO"]);
    let out = mqadmin(&["--endpoints", &endpoints, "topic", "route", "payments"]).await?;
    let (stdout, _) = text(&out);
    assert_eq!(stdout.lines().count(), 4, "a header and three queues: {stdout}");
    assert!(stdout.lines().nth(1).is_some_and(|l| l.contains(&group.endpoint(leader))), "{stdout}");
    let out = mqadmin(&["--endpoints", &endpoints, "topic", "delete", "payments"]).await?;
    assert!(out.status.success(), "topic delete failed: {}", text(&out).1);

    // Failures exit non-zero and say why.
    let out = mqadmin(&["--endpoints", &endpoints, "topic", "create", "bad name"]).await?;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot create topic bad name") && stderr.contains("InvalidArgument"), "{stderr}");
    let out = mqadmin(&["--endpoints", "nonsense", "cluster", "list"]).await?;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("invalid endpoints"), "{}", text(&out).1);
    group.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqadmin_bench_produce_prints_its_figures() -> anyhow::Result<()> {
    let group = Group::start(Some(8)).await?;
    let endpoints = group.endpoints();
    let args =
        ["--endpoints", &endpoints, "bench", "produce", "--seconds", "2", "--producers", "4", "--body-size", "512"];
    let out = mqadmin(&args).await?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench failed: {stdout}{stderr}");
    let sent: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("messages sent: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no message count in {stdout}"))?;
    assert!(sent > 0, "{stdout}");
    assert!(stdout.contains("errors: 0"), "{stdout}{stderr}");
    for figure in ["msg/s", "MB/s", "p50", "p99", "max"] {
        assert!(stdout.contains(figure), "no {figure} in {stdout}");
    }
    // The messages are really there: the topic's queues hold them all.
    let node = group.node(1).ok_or_else(|| anyhow::anyhow!("node 1 stopped"))?;
    let topic = raftmq_machine::types::TopicName::new("BenchmarkTopic")?;
    let stored_at = std::time::Instant::now();
    loop {
        let stored: u64 = node.state.read(|a| {
            (0..8)
                .filter_map(|q| a.machine.queue(&topic, raftmq_machine::types::QueueId(q)))
                .map(|q| q.max_offset())
                .sum()
        });
        if stored >= sent {
            break;
        }
        anyhow::ensure!(stored_at.elapsed() < Duration::from_secs(5), "{stored} stored, {sent} acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A message cap ends the run early.
    let capped = ["--endpoints", &endpoints, "bench", "produce", "--seconds", "30", "--messages", "50"];
    let started = std::time::Instant::now();
    let out = mqadmin(&capped).await?;
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("messages sent: 50 "), "{}", text(&out).0);
    assert!(started.elapsed() < Duration::from_secs(20));
    group.shutdown().await;
    Ok(())
}

/// Runs `mqadmin message query` against `endpoint` with `more` arguments.
async fn message_query(endpoint: &str, more: &[&str]) -> anyhow::Result<Output> {
    let mut args = vec!["--endpoints", endpoint, "message", "query"];
    args.extend_from_slice(more);
    mqadmin(&args).await
}

/// Bad arguments exit non-zero and say why.
async fn check_refusals(endpoint: &str) -> anyhow::Result<()> {
    let long = "i".repeat(129);
    let refused: [(&[&str], &[&str]); 5] = [
        (&["--id", "x", "--key", "y"], &["cannot be used with"]),
        (&["--key", "k", "--begin", "yesterday"], &["RFC 3339"]),
        (&["--queue", "1"], &["--topic"]),
        (&[], &["required"]),
        (&["--id", &long], &["cannot query messages by id", "InvalidArgument", "1 to 128 bytes"]),
    ];
    for (args, says) in refused {
        let out = message_query(endpoint, args).await?;
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = text(&out).1;
        assert!(says.iter().all(|s| stderr.contains(s)), "{args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqadmin_message_query_prints_properties_and_body() -> anyhow::Result<()> {
    let group = Group::start(Some(8)).await?;
    let endpoint = group.endpoint(2);
    let producer = Producer::new(&group.endpoints())?;
    let hello = Message::new("hello query").with_tag("greeting").with_key("q-key").with_property("region", "eu");
    let hello = producer.send("audit", hello).await?;
    let binary = producer.send("audit", Message::new(vec![0u8, 1, 2, 255]).with_key("q-key")).await?;
    // Dispatch runs behind apply: wait until node 2 has indexed both.
    let admin = Admin::new(&endpoint)?;
    let started = std::time::Instant::now();
    let key = MessageQuery::Key { key: "q-key".into(), topic: None, begin_ms: None, end_ms: None };
    while admin.query_messages(key.clone(), None).await?.len() < 2 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "node 2 did not index the messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = message_query(&endpoint, &["--id", &hello.message_id]).await?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "query by id failed: {stderr}");
    let offset = hello.offset.map_or_else(|| "-".to_string(), |o| o.to_string());
    for line in [
        "message 1 of 1".to_string(),
        format!("  message id:   {}", hello.message_id),
        format!("  queue:        {}", hello.queue_id),
        format!("  queue offset: {offset}"),
        "  topic:        audit".to_string(),
        "  tag:          greeting".to_string(),
        "  keys:         q-key".to_string(),
        "  property:     region=eu".to_string(),
        "  body size:    11 bytes".to_string(),
        "  body:         hello query".to_string(),
    ] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }

    let out = message_query(&endpoint, &["--key", "q-key", "--topic", "audit"]).await?;
    let (stdout, _) = text(&out);
    assert!(stdout.starts_with("message 1 of 2\n") && stdout.contains("message 2 of 2\n"), "{stdout}");
    assert!(stdout.contains(&format!("  message id:   {}", binary.message_id)), "{stdout}");
    assert!(stdout.lines().any(|l| l == "  body (hex):   000102ff"), "{stdout}");

    let (queue, offset) = (binary.queue_id.to_string(), binary.offset.unwrap_or_default().to_string());
    let out = message_query(&endpoint, &["--topic", "audit", "--queue", &queue, "--offset", &offset]).await?;
    let (stdout, _) = text(&out);
    assert!(stdout.starts_with("message 1 of 1\n"), "{stdout}");
    assert!(stdout.contains(&format!("  message id:   {}", binary.message_id)), "{stdout}");
    assert!(stdout.contains(&format!("  queue offset: {offset}\n")), "{stdout}");

    let range = ["--key", "q-key", "--begin", "2000-01-01T00:00:00Z", "--end", "946771200000"];
    let out = message_query(&endpoint, &range).await?;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0, "no messages found\n");
    check_refusals(&endpoint).await?;
    group.shutdown().await;
    Ok(())
}
