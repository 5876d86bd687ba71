//! Drives the official RocketMQ 5 Rust client (crate `rocketmq` 5.0.0) against a running
//! raftmq group: Producer send, SimpleConsumer receive/ack, a SQL92 filter, a delay
//! message, transactions with commit, rollback and a check-back over the Telemetry stream,
//! and FIFO order for a consumer group configured orderly (with mqadmin).
//!
//! Usage: raftmq-rust-client-check <endpoints> [topic-suffix]
//! `endpoints` is written `host:port;host:port`. Prints one line per check that holds and
//! `PASS` at the end; on the first failure prints `FAIL: <reason>` and exits non-zero.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use rocketmq::{Producer, SimpleConsumer};

/// How long the server may hold an empty receive; the crate uses it as the whole call's
/// deadline too, so it stays short to keep empty polls cheap.
const LONG_POLL: Duration = Duration::from_secs(5);
/// How long a received message stays invisible before the server may hand it out again.
const INVISIBLE: Duration = Duration::from_secs(10);
/// Upper bound for any single call into the client, so a hung call fails the check.
const CALL_LIMIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() {
    // The crate panics in its own tasks on answers it does not expect (an unknown status
    // code, a missing field); such a panic is a failed check, not something to ignore.
    std::panic::set_hook(Box::new(|info| {
        println!("FAIL: the client panicked: {info}");
        std::process::exit(1);
    }));
    match run().await {
        Ok(()) => println!("PASS"),
        Err(e) => {
            println!("FAIL: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoints = args.next().context("usage: raftmq-rust-client-check <host:port;host:port...> [topic-suffix]")?;
    let suffix = match args.next() {
        Some(s) => s,
        None => format!("{:x}", now()?.as_millis() ^ u128::from(std::process::id())),
    };
    // The crate separates addresses with ',' where the other clients use ';'.
    let access_url = endpoints.replace(';', ",");

    let mut client = ClientOption::default();
    client.set_access_url(access_url);
    client.set_enable_tls(false);
    client.set_long_polling_timeout(LONG_POLL);

    normal_messages(&client, &suffix).await?;
    sql_filter(&client, &suffix).await?;
    delay_message(&client, &suffix).await?;
    transactions(&client, &suffix).await?;
    fifo_messages(&client, &endpoints, &suffix).await?;
    Ok(())
}

/// (a) Ten normal messages with tags and keys, received and acked exactly once.
async fn normal_messages(client: &ClientOption, suffix: &str) -> Result<()> {
    let topic = format!("rtopic-{suffix}");
    let producer = start_producer(client, &topic).await?;
    let mut sent = HashMap::new();
    for i in 0..10 {
        let body = format!("body-{i}");
        let tag = if i % 2 == 0 { "TagA" } else { "TagB" };
        let key = format!("key-{i}");
        let message = MessageBuilder::builder()
            .set_topic(&topic)
            .set_body(body.clone().into_bytes())
            .set_tag(tag)
            .set_keys(vec![key.clone()])
            .set_properties(HashMap::from([("n", i.to_string())]))
            .build()
            .with_context(|| format!("building message {i}"))?;
        let receipt = call(producer.send(message), || format!("send of message {i} to {topic}")).await?;
        ensure!(!receipt.message_id().is_empty(), "send of message {i} returned no message id");
        sent.insert(body, (tag.to_string(), key, i.to_string()));
    }
    println!("producer: sent 10 messages with tags and keys to {topic}");

    let consumer = start_consumer(client, &format!("rgroup-all-{suffix}"), &topic).await?;
    let got = receive_all(&consumer, &topic, 10, Duration::from_secs(60)).await?;
    let mut bodies: Vec<_> = got.iter().map(|(b, _)| b.clone()).collect();
    bodies.sort();
    let mut want: Vec<_> = sent.keys().cloned().collect();
    want.sort();
    ensure!(bodies == want, "simple consumer: expected {want:?}, got {bodies:?}");
    for (body, view) in &got {
        let (tag, key, n) = &sent[body];
        ensure!(view.tag() == Some(tag.as_str()), "message {body} arrived with tag {:?}, sent with {tag}", view.tag());
        ensure!(view.keys() == [key.clone()], "message {body} arrived with keys {:?}, sent with [{key}]", view.keys());
        ensure!(
            view.properties().get("n") == Some(n),
            "message {body} arrived with properties {:?}, sent with n={n}",
            view.properties()
        );
    }
    println!("simple consumer: received and acked all 10 messages once, tags, keys and properties intact");

    // Nothing comes back, not even once the invisible duration of the received batch has
    // passed: an ack the server did not apply would show up here as a redelivery.
    let quiet_until = Instant::now() + INVISIBLE + Duration::from_secs(2);
    let mut polls = 0;
    while polls == 0 || Instant::now() < quiet_until {
        let again = receive(&consumer, &topic).await?;
        ensure!(again.is_empty(), "acked messages were delivered again: {:?}", bodies_of(&again));
        polls += 1;
    }
    println!("simple consumer: {polls} later receives returned nothing (no redelivery after ack)");

    call(consumer.shutdown(), || "simple consumer shutdown".to_string()).await?;
    call(producer.shutdown(), || "producer shutdown".to_string()).await?;
    Ok(())
}

/// (a2) A SQL92 filter over a property and the tag: of the ten messages of (a), another
/// consumer group subscribed with `n > 5 AND TAGS = 'TagA'` gets body-6 and body-8 only.
async fn sql_filter(client: &ClientOption, suffix: &str) -> Result<()> {
    let topic = format!("rtopic-{suffix}");
    let consumer = start_consumer(client, &format!("rgroup-sql-{suffix}"), &topic).await?;
    let sql = FilterExpression::new(FilterType::Sql, "n > 5 AND TAGS = 'TagA'");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    // Both arrive, then a few more polls show nothing else passes.
    let mut quiet = 0;
    while Instant::now() < deadline && (got.len() < 2 || quiet < 2) {
        let batch =
            call(consumer.receive_with(&topic, &sql, 16, INVISIBLE), || format!("SQL92 receive from {topic}")).await?;
        if batch.is_empty() {
            quiet += 1;
        }
        for view in batch {
            got.push(String::from_utf8_lossy(view.body()).into_owned());
            call(consumer.ack(&view), || "ack of a filtered message".to_string()).await?;
        }
    }
    got.sort();
    ensure!(got == ["body-6", "body-8"], "SQL92 filter: expected body-6 and body-8, got {got:?}");
    println!("SQL92 filter: n > 5 AND TAGS = 'TagA' received exactly body-6 and body-8");
    call(consumer.shutdown(), || "SQL92 consumer shutdown".to_string()).await?;
    Ok(())
}

/// (d) FIFO: a consumer group configured for orderly consumption (with `mqadmin`, whose
/// path is in RAFTMQ_MQADMIN) gets each message group in send order, one message of a group
/// at a time.
async fn fifo_messages(client: &ClientOption, endpoints: &str, suffix: &str) -> Result<()> {
    let mqadmin = std::env::var("RAFTMQ_MQADMIN").context("RAFTMQ_MQADMIN must name the mqadmin binary")?;
    let (topic, group) = (format!("rfifo-{suffix}"), format!("rgroup-fifo-{suffix}"));
    let out = std::process::Command::new(&mqadmin)
        .args(["--endpoints", endpoints, "group", "update", &group, "--fifo", "true"])
        .output()
        .with_context(|| format!("running {mqadmin}"))?;
    ensure!(out.status.success(), "mqadmin group update failed: {}", String::from_utf8_lossy(&out.stderr));
    let producer = start_producer(client, &topic).await?;
    for i in 0..5 {
        for g in ["a", "b"] {
            let message =
                MessageBuilder::fifo_message_builder(&topic, format!("{g}/{i}").into_bytes(), format!("order-{g}"))
                    .build()
                    .context("building a FIFO message")?;
            call(producer.send(message), || format!("send of {g}/{i}")).await?;
        }
    }
    let consumer = start_consumer(client, &group, &topic).await?;
    let mut next: HashMap<String, u32> = HashMap::from([("a".to_string(), 0), ("b".to_string(), 0)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.values().any(|n| *n < 5) && Instant::now() < deadline {
        let mut in_batch = HashSet::new();
        for view in receive(&consumer, &topic).await? {
            let body = String::from_utf8_lossy(view.body()).into_owned();
            let (g, i) = body.split_once('/').with_context(|| format!("unexpected body {body}"))?;
            let i: u32 = i.parse().with_context(|| format!("unexpected body {body}"))?;
            ensure!(in_batch.insert(g.to_string()), "FIFO: two messages of group {g} in flight at once");
            let want = next.get(g).copied().unwrap_or(0);
            ensure!(i == want, "FIFO: group {g} delivered {i} when {want} was next");
            call(consumer.ack(&view), || format!("ack of {body}")).await?;
            next.insert(g.to_string(), want + 1);
        }
    }
    ensure!(next.values().all(|n| *n == 5), "FIFO: not every message arrived in time: next expected {next:?}");
    println!("FIFO: both message groups received in order, one message of a group at a time");
    call(consumer.shutdown(), || "FIFO consumer shutdown".to_string()).await?;
    call(producer.shutdown(), || "FIFO producer shutdown".to_string()).await?;
    Ok(())
}

/// (b) A delay message is not delivered before its delivery timestamp.
async fn delay_message(client: &ClientOption, suffix: &str) -> Result<()> {
    let topic = format!("rdelay-{suffix}");
    let producer = start_producer(client, &topic).await?;
    // The crate sends the timestamp in whole seconds: round up so it is at least 3 s ahead.
    let due = now()?.as_secs() + 4;
    let message = MessageBuilder::delay_message_builder(
        &topic,
        b"later".to_vec(),
        i64::try_from(due).context("delivery timestamp")?,
    )
    .build()
    .context("building the delay message")?;
    call(producer.send(message), || format!("send of the delay message to {topic}")).await?;

    let consumer = start_consumer(client, &format!("rgroup-delay-{suffix}"), &topic).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let arrived = loop {
        ensure!(Instant::now() < deadline, "delay message: not delivered within 60 s");
        let batch = receive(&consumer, &topic).await?;
        if batch.is_empty() {
            continue;
        }
        let at = now()?;
        ensure!(
            bodies_of(&batch) == ["later"],
            "delay message: expected one message 'later', got {:?}",
            bodies_of(&batch)
        );
        for view in &batch {
            call(consumer.ack(view), || "ack of the delay message".to_string()).await?;
        }
        break at;
    };
    let due = Duration::from_secs(due);
    ensure!(arrived >= due, "delay message delivered {:.3} s before its time", (due - arrived).as_secs_f64());
    println!("delay message: delivered {:.3} s after its time", (arrived - due).as_secs_f64());

    call(consumer.shutdown(), || "delay consumer shutdown".to_string()).await?;
    call(producer.shutdown(), || "delay producer shutdown".to_string()).await?;
    Ok(())
}

/// (c) A committed half message is delivered, a rolled-back one never; one left open is
/// checked back over the producer's Telemetry stream and its checker commits it.
async fn transactions(client: &ClientOption, suffix: &str) -> Result<()> {
    let topic = format!("rtx-{suffix}");
    let checked: Arc<Mutex<Vec<String>>> = Arc::default();
    let asked = Arc::clone(&checked);
    let mut option = ProducerOption::default();
    option.set_topics(vec![topic.clone()]);
    let mut producer = Producer::new_transaction_producer(
        option,
        client.clone(),
        Box::new(move |_transaction_id, message: MessageView| {
            let body = String::from_utf8_lossy(message.body()).into_owned();
            if let Ok(mut asked) = asked.lock() {
                asked.push(body);
            }
            TransactionResolution::COMMIT
        }),
    )
    .context("creating the transaction producer")?;
    call(producer.start(), || "transaction producer start".to_string()).await?;

    for (body, end) in [("tx-commit", Some(true)), ("tx-rollback", Some(false)), ("tx-orphan", None)] {
        let message = MessageBuilder::transaction_message_builder(&topic, body.as_bytes().to_vec())
            .build()
            .with_context(|| format!("building {body}"))?;
        let transaction =
            call(producer.send_transaction_message(message), || format!("send of half message {body}")).await?;
        ensure!(!transaction.transaction_id().is_empty(), "half message {body} got no transaction id");
        match end {
            Some(true) => call(transaction.commit(), || format!("commit of {body}")).await?,
            Some(false) => call(transaction.rollback(), || format!("rollback of {body}")).await?,
            // Left open on purpose: only the server's check-back can resolve it.
            None => drop(transaction),
        }
    }
    let opened = Instant::now();

    let consumer = start_consumer(client, &format!("rgroup-tx-{suffix}"), &topic).await?;
    let got = receive_all(&consumer, &topic, 2, Duration::from_secs(60)).await?;
    let mut bodies: Vec<_> = got.iter().map(|(b, _)| b.clone()).collect();
    bodies.sort();
    ensure!(
        bodies == ["tx-commit", "tx-orphan"],
        "transactions: expected tx-commit and tx-orphan (after its check-back), got {bodies:?}"
    );
    let orphan_after = opened.elapsed();
    let asked = checked.lock().map_err(|_| anyhow!("the transaction checker panicked"))?.clone();
    ensure!(asked == ["tx-orphan"], "transactions: the server checked back {asked:?}, expected only the orphan");
    // Neither the rolled-back message nor a second copy of the others shows up later.
    let quiet_until = Instant::now() + INVISIBLE + Duration::from_secs(2);
    while Instant::now() < quiet_until {
        let late = receive(&consumer, &topic).await?;
        ensure!(
            late.is_empty(),
            "transactions: a rolled-back or repeated message was delivered: {:?}",
            bodies_of(&late)
        );
    }
    let asked = checked.lock().map_err(|_| anyhow!("the transaction checker panicked"))?.clone();
    ensure!(
        asked == ["tx-orphan"],
        "transactions: the server checked back {asked:?} in the end, expected only the orphan once"
    );
    println!(
        "transactions: commit delivered, rollback never, the orphan checked back once and committed ({:.1} s after it was sent)",
        orphan_after.as_secs_f64()
    );

    call(consumer.shutdown(), || "transaction consumer shutdown".to_string()).await?;
    call(producer.shutdown(), || "transaction producer shutdown".to_string()).await?;
    Ok(())
}

async fn start_producer(client: &ClientOption, topic: &str) -> Result<Producer> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![topic.to_string()]);
    let mut producer = Producer::new(option, client.clone()).context("creating a producer")?;
    call(producer.start(), || format!("producer start (route of {topic})")).await?;
    Ok(producer)
}

async fn start_consumer(client: &ClientOption, group: &str, topic: &str) -> Result<SimpleConsumer> {
    let mut option = SimpleConsumerOption::default();
    option.set_consumer_group(group);
    option.set_topics(vec![topic.to_string()]);
    let mut consumer = SimpleConsumer::new(option, client.clone()).context("creating a simple consumer")?;
    call(consumer.start(), || format!("simple consumer start (group {group}, route of {topic})")).await?;
    Ok(consumer)
}

async fn receive(consumer: &SimpleConsumer, topic: &str) -> Result<Vec<MessageView>> {
    let all = FilterExpression::new(FilterType::Tag, "*");
    call(consumer.receive_with(topic, &all, 16, INVISIBLE), || format!("receive from {topic}")).await
}

/// Receives and acks until `want` messages arrived or `within` passed; a body seen twice
/// is a failure.
async fn receive_all(
    consumer: &SimpleConsumer,
    topic: &str,
    want: usize,
    within: Duration,
) -> Result<Vec<(String, MessageView)>> {
    let deadline = Instant::now() + within;
    let mut seen = HashSet::new();
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        for view in receive(consumer, topic).await? {
            let body = String::from_utf8_lossy(view.body()).into_owned();
            if !seen.insert(body.clone()) {
                bail!("message {body:?} delivered twice");
            }
            call(consumer.ack(&view), || format!("ack of {body}")).await?;
            got.push((body, view));
        }
    }
    Ok(got)
}

fn bodies_of(views: &[MessageView]) -> Vec<String> {
    views.iter().map(|v| String::from_utf8_lossy(v.body()).into_owned()).collect()
}

/// Runs one client call with an upper bound on its duration; `what` names it in errors.
async fn call<T, E, F>(fut: F, what: impl FnOnce() -> String) -> Result<T>
where
    F: std::future::Future<Output = std::result::Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(CALL_LIMIT, fut).await {
        Ok(result) => result.with_context(what),
        Err(_) => bail!("{}: no answer within {} s", what(), CALL_LIMIT.as_secs()),
    }
}

fn now() -> Result<Duration> {
    SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")
}
