//! `mqadmin group ...`: consumer groups and the clients connected to the members.

use anyhow::Context as _;
use raftmq_client::proto::admin::v1::QueueProgress;
use raftmq_client::proto::rocketmq::v2::Code;
use raftmq_client::{
    Admin, ClientList, GroupProgress, Message, Producer, PullConsumer, ReceivedMessage, ResetTo, StartFrom,
};

use super::table::Table;

/// The `group clients` table, then the members that did not answer.
pub fn render_clients(list: &ClientList) -> String {
    let mut t = Table::new(&["CLIENT", "KIND", "GROUP", "TOPICS", "NODE", "ADDRESS", "AGENT", "IDLE", "TELEMETRY"]);
    for c in &list.clients {
        t.row(vec![
            c.client_id.clone(),
            c.kind.clone(),
            if c.group.is_empty() { "-".to_string() } else { c.group.clone() },
            if c.topics.is_empty() { "-".to_string() } else { c.topics.join(",") },
            c.node_id.to_string(),
            if c.address.is_empty() { "-".to_string() } else { c.address.clone() },
            if c.agent.is_empty() { "-".to_string() } else { c.agent.clone() },
            format!("{:.1}s", c.idle_ms as f64 / 1000.0),
            if c.telemetry { "open" } else { "closed" }.to_string(),
        ]);
    }
    let mut out = t.render();
    for u in &list.unreachable {
        out.push_str(&format!("unreachable: node {}: {}\n", u.node_id, u.message));
    }
    out
}

/// `group update GROUP [--fifo BOOL] [--max-attempts N]`.
#[allow(clippy::print_stdout)]
pub async fn update(endpoints: &str, group: &str, fifo: bool, max_attempts: u32) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    admin
        .upsert_group(group, fifo, max_attempts)
        .await
        .with_context(|| format!("cannot configure the consumer group {group}"))?;
    println!("consumer group {group}: fifo {fifo}, max attempts {max_attempts}");
    Ok(())
}

/// The `dlq list` table.
pub fn render_dead_letters(messages: &[ReceivedMessage]) -> String {
    let mut t = Table::new(&["OFFSET", "MESSAGE ID", "KEYS", "ORIGINAL TOPIC", "BODY"]);
    for m in messages {
        let preview: String = String::from_utf8_lossy(&m.body[..m.body.len().min(48)]).chars().take(48).collect();
        t.row(vec![
            m.offset.to_string(),
            m.message_id.clone(),
            if m.keys.is_empty() { "-".to_string() } else { m.keys.join(",") },
            m.properties.get("RETRY_TOPIC").cloned().unwrap_or_else(|| "-".to_string()),
            preview.escape_debug().to_string(),
        ]);
    }
    t.render()
}

/// Most dead letters one `dlq list` or `dlq resend` reads.
const MAX_DEAD_LETTERS_READ: usize = 100_000;

/// Reads `group`'s dead-letter topic from its start with a pull consumer (no consumer
/// group's position moves), at most `limit` messages, oldest first; `None` when the topic
/// does not exist (nothing was ever dead-lettered).
async fn read_dead_letters(endpoints: &str, group: &str, limit: usize) -> anyhow::Result<Option<Vec<ReceivedMessage>>> {
    let topic = format!("%DLQ%{group}");
    let reader = PullConsumer::new(endpoints, "mqadmin-dlq-reader", &topic, "*", StartFrom::Earliest)?;
    let mut messages = Vec::new();
    while messages.len() < limit {
        let batch = match reader.pull(32, std::time::Duration::ZERO).await {
            Ok(b) => b,
            Err(e) if e.broker_code() == Some(Code::TopicNotFound) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {topic}")),
        };
        if batch.is_empty() {
            break;
        }
        messages.extend(batch);
    }
    messages.sort_by_key(|m| m.offset);
    messages.truncate(limit);
    Ok(Some(messages))
}

/// `dlq list GROUP`.
#[allow(clippy::print_stdout)]
pub async fn dead_letters(endpoints: &str, group: &str, limit: usize) -> anyhow::Result<()> {
    let Some(messages) = read_dead_letters(endpoints, group, limit.min(MAX_DEAD_LETTERS_READ)).await? else {
        println!("consumer group {group} has no dead letters (%DLQ%{group} does not exist)");
        return Ok(());
    };
    if messages.is_empty() {
        println!("consumer group {group} has no dead letters");
    }
    print!("{}", render_dead_letters(&messages));
    Ok(())
}

/// The message a dead letter is sent again as, and the topic it goes to: its original
/// topic, keys, tag, message group and user properties (without the delivery's
/// RETRY_TOPIC), and ORIGIN_MESSAGE_ID naming it.
pub fn resend_of(dead: &ReceivedMessage) -> anyhow::Result<(String, Message)> {
    let topic = dead.properties.get(ORIGINAL_TOPIC).cloned().with_context(|| {
        format!("dead letter {} (offset {}) does not name its original topic", dead.message_id, dead.offset)
    })?;
    let mut m = Message::new(dead.body.clone());
    m.tag = dead.tag.clone();
    m.keys = dead.keys.clone();
    m.message_group = dead.message_group.clone();
    m.properties = dead.properties.clone();
    m.properties.remove(ORIGINAL_TOPIC);
    m.properties.insert(ORIGIN_MESSAGE_ID.to_string(), dead.message_id.clone());
    Ok((topic, m))
}

/// The property a dead letter's delivery names its original topic in.
const ORIGINAL_TOPIC: &str = "RETRY_TOPIC";
/// The property a resent message names the dead letter it came from in.
const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";

/// `dlq resend GROUP --id ID... | --all` (`ids` empty: all).
#[allow(clippy::print_stdout)]
pub async fn resend_dead_letters(endpoints: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
    let Some(messages) = read_dead_letters(endpoints, group, MAX_DEAD_LETTERS_READ).await? else {
        anyhow::bail!("consumer group {group} has no dead letters (%DLQ%{group} does not exist)");
    };
    let chosen: Vec<&ReceivedMessage> =
        messages.iter().filter(|m| ids.is_empty() || ids.contains(&m.message_id)).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !messages.iter().any(|m| &m.message_id == *id)).collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "not in the dead letters of {group}: {}; nothing was resent (see `mqadmin dlq list {group}`)",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    let resends = chosen.iter().map(|m| resend_of(m)).collect::<anyhow::Result<Vec<_>>>()?;
    let producer = Producer::new(endpoints)?;
    let mut t = Table::new(&["DLQ OFFSET", "DEAD LETTER ID", "TOPIC", "NEW MESSAGE ID", "QUEUE", "OFFSET"]);
    for (dead, (topic, message)) in chosen.iter().zip(resends) {
        let receipt = producer
            .send(&topic, message)
            .await
            .with_context(|| format!("resending dead letter {} to {topic}", dead.message_id))?;
        t.row(vec![
            dead.offset.to_string(),
            dead.message_id.clone(),
            topic,
            receipt.message_id.clone(),
            receipt.queue_id.to_string(),
            receipt.offset.map_or_else(|| "-".to_string(), |o| o.to_string()),
        ]);
    }
    print!("{}", t.render());
    println!("resent {} dead letters of {group}", chosen.len());
    Ok(())
}

/// `group list`.
#[allow(clippy::print_stdout)]
pub async fn list(endpoints: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let groups = admin.list_groups().await.context("cannot list the consumer groups")?;
    let mut t = Table::new(&["GROUP", "FIFO", "MAX ATTEMPTS", "DEAD LETTERS"]);
    for g in &groups {
        t.row(vec![g.group.clone(), g.fifo.to_string(), g.max_attempts.to_string(), format!("%DLQ%{}", g.group)]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `group clients GROUP`.
#[allow(clippy::print_stdout)]
pub async fn clients(endpoints: &str, group: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let list = admin.list_clients(group).await.with_context(|| format!("cannot list the clients of {group}"))?;
    if list.clients.is_empty() {
        println!("no live clients of {group}");
    }
    print!("{}", render_clients(&list));
    Ok(())
}

/// The per-queue table: broker offset, the group's consumer offset, in flight, ready, lag.
fn queue_table(queues: &[QueueProgress]) -> String {
    let mut t = Table::new(&["TOPIC", "QUEUE", "BROKER OFFSET", "CONSUMER OFFSET", "INFLIGHT", "READY", "LAG"]);
    for q in queues {
        t.row(vec![
            q.topic.clone(),
            q.queue.to_string(),
            q.broker_offset.to_string(),
            q.consumer_offset.to_string(),
            q.inflight.to_string(),
            q.ready.to_string(),
            q.lag.to_string(),
        ]);
    }
    t.render()
}

/// The `group progress` table, then the totals.
pub fn render_progress(progress: &GroupProgress) -> String {
    let sum = |f: fn(&QueueProgress) -> u64| progress.queues.iter().map(f).sum::<u64>();
    let (inflight, ready, lag) = (sum(|q| q.inflight), sum(|q| q.ready), sum(|q| q.lag));
    let mut out = queue_table(&progress.queues);
    out.push_str(&format!(
        "total: inflight {inflight}, ready {ready}, lag {lag} (node {} at log index {})\n",
        progress.node_id, progress.applied_index
    ));
    out
}

/// `group progress GROUP`.
#[allow(clippy::print_stdout)]
pub async fn progress(endpoints: &str, group: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let progress = admin.group_progress(group).await.with_context(|| format!("cannot read the progress of {group}"))?;
    if progress.queues.is_empty() {
        println!("consumer group {group} has consumed from no queue");
    }
    print!("{}", render_progress(&progress));
    Ok(())
}

/// Reads `--to`: `earliest`, `latest`, an RFC 3339 time or milliseconds since the epoch.
pub fn parse_reset_to(text: &str) -> Result<ResetTo, String> {
    match text.trim() {
        "earliest" => Ok(ResetTo::Earliest),
        "latest" => Ok(ResetTo::Latest),
        other => super::message::parse_time(other).map(ResetTo::Time),
    }
}

/// `group reset-offset GROUP --topic T --to TIME|earliest|latest`.
#[allow(clippy::print_stdout)]
pub async fn reset_offset(endpoints: &str, group: &str, topic: &str, to: &str) -> anyhow::Result<()> {
    let to = parse_reset_to(to).map_err(|e| anyhow::anyhow!("--to {to:?}: {e}; give earliest, latest or a time"))?;
    let admin = Admin::new(endpoints)?;
    let queues = admin
        .reset_offset(group, topic, to)
        .await
        .with_context(|| format!("cannot reset the offsets of {group} on {topic}"))?;
    println!("consumer group {group} on topic {topic} now starts at:");
    print!("{}", queue_table(&queues));
    Ok(())
}
