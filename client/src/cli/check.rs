//! `mqadmin check`: reads the records of `bench produce --record` and `bench consume
//! --record` and prints each invariant with its count, the unavailability a fault caused,
//! and, given the group's endpoints, whether every member holds the same log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use raftmq_client::{Admin, ClientOptions};

use super::record::{self, BodyCheck, Event, QueueRef};
use super::table::Table;

/// How long the members may take to agree on their last log index after the run.
const AGREE_DEADLINE: Duration = Duration::from_secs(30);
/// Examples printed per failed invariant.
const EXAMPLES: usize = 5;

/// Options of `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// A `bench produce --record` file (repeat for several producers' files).
    #[arg(long = "sends", required = true)]
    sends: Vec<PathBuf>,
    /// A `bench consume --record` file (repeat for several).
    #[arg(long = "deliveries", required = true)]
    deliveries: Vec<PathBuf>,
    /// When a fault was injected (ms since the epoch; repeat for several, in order): prints
    /// the unavailability each caused.
    #[arg(long = "fault-at-ms")]
    fault_at_ms: Vec<u64>,
    /// When each fault was healed (ms since the epoch, one per --fault-at-ms): sends
    /// acknowledged while a fault was on are counted apart (a cut-off minority must
    /// acknowledge none of them, so each must be in the log every member agrees on).
    #[arg(long = "healed-at-ms")]
    healed_at_ms: Vec<u64>,
    /// Also check that every member of a group (these endpoints, one per member) holds the
    /// same log; once per group.
    #[arg(long)]
    members: Vec<String>,
    /// Print the result as one JSON object too.
    #[arg(long)]
    json: bool,
}

/// One invariant's outcome.
struct Finding {
    name: &'static str,
    count: u64,
    /// Whether a count above zero is a failure (otherwise it is a figure to watch).
    must_be_zero: bool,
    examples: Vec<String>,
}

impl Finding {
    fn failed(&self) -> bool {
        self.must_be_zero && self.count > 0
    }
}

/// An acknowledged send: (start, end, producer, seq, queue, offset).
type Ack = (u64, u64, u32, u64, QueueRef, Option<u64>);

#[derive(Default)]
struct Records {
    /// Acknowledged sends by message id.
    acked: HashMap<String, Ack>,
    failed: Vec<(u64, u64)>,
    /// Deliveries: (time, queue, offset, id, attempt, body).
    delivered: Vec<(u64, QueueRef, u64, String, u32, BodyCheck)>,
    /// Confirmed acks: (queue, offset) → first time.
    ack_confirmed: HashMap<(QueueRef, u64), u64>,
    /// Committed offsets: (applied index, time, node, queue, offset).
    committed: Vec<(u64, u64, u64, QueueRef, u64)>,
}

fn read_records(args: &CheckArgs) -> anyhow::Result<Records> {
    let mut r = Records::default();
    for path in args.sends.iter().chain(&args.deliveries) {
        record::read(path, |e| match e {
            Event::Acked { start, end, producer, seq, queue, offset, id } => {
                r.acked.insert(id, (start, end, producer, seq, queue, offset));
            }
            Event::Failed { start, end, .. } => r.failed.push((start, end)),
            Event::Delivered { time, queue, offset, id, attempt, body, .. } => {
                r.delivered.push((time, queue, offset, id, attempt, body))
            }
            Event::AckConfirmed { time, queue, offset, .. } => {
                let t = r.ack_confirmed.entry((queue, offset)).or_insert(time);
                *t = (*t).min(time);
            }
            Event::Committed { time, node, applied, queue, offset } => {
                r.committed.push((applied, time, node, queue, offset))
            }
        })?;
    }
    Ok(r)
}

fn finding(name: &'static str, must_be_zero: bool, examples: Vec<String>, count: u64) -> Finding {
    Finding { name, count, must_be_zero, examples: examples.into_iter().take(EXAMPLES).collect() }
}

/// The invariants over the records.
fn invariants(r: &Records, faults: &[(u64, u64)]) -> Vec<Finding> {
    let delivered_ids: HashSet<&str> = r.delivered.iter().map(|d| d.3.as_str()).collect();
    let mut out = Vec::new();

    // Every acknowledged message was consumed at least once.
    let lost: Vec<String> = r.acked.keys().filter(|id| !delivered_ids.contains(id.as_str())).cloned().collect();
    out.push(finding("acknowledged, never delivered (lost)", true, lost.clone(), lost.len() as u64));

    // Acknowledged while the fault was on: each must be in the agreed log, so delivered.
    if !faults.is_empty() {
        let during: Vec<&String> = r
            .acked
            .iter()
            .filter(|(_, a)| faults.iter().any(|(at, healed)| a.1 >= *at && a.1 <= *healed))
            .map(|(id, _)| id)
            .collect();
        let lost_during: Vec<String> =
            during.iter().filter(|id| !delivered_ids.contains(id.as_str())).map(|id| id.to_string()).collect();
        out.push(finding(
            "acknowledged during the fault, then lost",
            true,
            lost_during.clone(),
            lost_during.len() as u64,
        ));
    }

    // Bodies came back intact.
    let bad: Vec<String> =
        r.delivered.iter().filter(|d| d.5 == BodyCheck::Bad).map(|d| format!("{} at {}:{}", d.3, d.1, d.2)).collect();
    out.push(finding("delivered with an altered body", true, bad.clone(), bad.len() as u64));

    // Each (queue, offset) holds one message id, as acks and deliveries saw it.
    let mut at: HashMap<(&QueueRef, u64), HashSet<&str>> = HashMap::new();
    let positions = r
        .acked
        .iter()
        .filter_map(|(id, a)| a.5.map(|o| ((&a.4, o), id.as_str())))
        .chain(r.delivered.iter().map(|d| ((&d.1, d.2), d.3.as_str())));
    for (pos, id) in positions {
        at.entry(pos).or_default().insert(id);
    }
    let clash: Vec<String> = at
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(pos, ids)| format!("queue {} offset {}: {ids:?}", pos.0, pos.1))
        .collect();
    out.push(finding("positions holding two message ids", true, clash.clone(), clash.len() as u64));

    // Offsets per queue are gapless: every offset between the lowest and the highest seen
    // was delivered.
    let mut per_queue: BTreeMap<&QueueRef, HashSet<u64>> = BTreeMap::new();
    for d in &r.delivered {
        per_queue.entry(&d.1).or_default().insert(d.2);
    }
    let mut gaps = Vec::new();
    let mut gap_count = 0u64;
    for (queue, offsets) in &per_queue {
        let (lo, hi) = (offsets.iter().min().copied().unwrap_or(0), offsets.iter().max().copied().unwrap_or(0));
        let highest_acked = r.acked.values().filter(|a| &a.4 == *queue).filter_map(|a| a.5).max().unwrap_or(0);
        for o in lo..=hi.max(highest_acked) {
            if !offsets.contains(&o) {
                gap_count += 1;
                gaps.push(format!("queue {queue} offset {o}"));
            }
        }
    }
    out.push(finding("offsets never delivered inside a queue's range (gaps)", true, gaps, gap_count));

    // A producer's sends, each awaited before the next, get increasing offsets in a queue.
    let mut by_producer: BTreeMap<(u32, &QueueRef), Vec<(u64, u64)>> = BTreeMap::new();
    for a in r.acked.values() {
        if let Some(o) = a.5 {
            by_producer.entry((a.2, &a.4)).or_default().push((a.3, o));
        }
    }
    let mut disorder = Vec::new();
    for ((producer, queue), mut sends) in by_producer {
        sends.sort_unstable();
        for w in sends.windows(2) {
            if w[1].1 <= w[0].1 {
                disorder.push(format!(
                    "producer {producer} queue {queue}: send {} at offset {} after send {} at {}",
                    w[1].0, w[1].1, w[0].0, w[0].1
                ));
            }
        }
    }
    out.push(finding("a producer's later send at a lower offset", true, disorder.clone(), disorder.len() as u64));

    // Committed consumer offsets never go back: the state at a higher applied index (on
    // any member) holds an offset at least as high.
    let mut committed = r.committed.clone();
    committed.sort_unstable();
    let mut best: HashMap<QueueRef, (u64, u64, u64)> = HashMap::new();
    let mut back = Vec::new();
    for (applied, _, node, queue, offset) in committed {
        match best.get(&queue) {
            Some(&(a, o, n)) if offset < o || (applied == a && offset != o) => back.push(format!(
                "queue {queue}: {o} on node {n} at index {a}, then {offset} on node {node} at index {applied}"
            )),
            _ => {
                best.insert(queue, (applied, offset, node));
            }
        }
    }
    out.push(finding("committed offsets going back", true, back.clone(), back.len() as u64));

    // Delivered again after the broker confirmed its ack.
    let again: Vec<String> = r
        .delivered
        .iter()
        .filter(|d| r.ack_confirmed.get(&(d.1.clone(), d.2)).is_some_and(|acked| *acked < d.0))
        .map(|d| format!("{} at {}:{} (attempt {})", d.3, d.1, d.2, d.4))
        .collect();
    out.push(finding("delivered again after a confirmed ack", true, again.clone(), again.len() as u64));

    // Figures to watch: messages stored twice (a send retried after its ack was lost) and
    // redeliveries of unacknowledged messages.
    let mut stored_at: HashMap<&str, HashSet<(&QueueRef, u64)>> = HashMap::new();
    for (pos, ids) in &at {
        for id in ids {
            stored_at.entry(id).or_default().insert(*pos);
        }
    }
    let twice: Vec<String> =
        stored_at.iter().filter(|(_, p)| p.len() > 1).map(|(id, p)| format!("{id} at {p:?}")).collect();
    out.push(finding("message ids stored at two positions (send retried)", false, twice.clone(), twice.len() as u64));
    let redelivered = r.delivered.iter().filter(|d| d.4 > 1).count() as u64;
    out.push(finding("redeliveries of unacknowledged messages", false, Vec::new(), redelivered));
    out
}

/// The unavailability a fault caused, in ms: the longest wait of any send started in the
/// fault's window, and the time from the fault to the first acknowledgement of a send
/// started after it. A fault's window runs from half way after the previous fault to half
/// way before the next (or the ends of the run), so that each send is counted once, for
/// the fault nearest its start: a send started just before a fault and held up by it is
/// that fault's, and a slow send still waiting when the next fault strikes is not that
/// next fault's.
#[derive(Debug, PartialEq)]
struct Unavailability {
    longest_wait_ms: f64,
    first_ack_after_ms: Option<f64>,
    failed_sends: u64,
}

fn unavailability(r: &Records, at: u64, from: u64, until: u64) -> Unavailability {
    let ms = |us: u64| us as f64 / 1000.0;
    let started_within = |(s, _): &(u64, u64)| *s >= from && *s < until;
    let waits = r.acked.values().map(|a| (a.0, a.1)).chain(r.failed.iter().copied()).filter(started_within);
    let longest_wait_ms = ms(waits.map(|(s, e)| e.saturating_sub(s)).max().unwrap_or(0));
    let first_ack_after_ms =
        r.acked.values().filter(|a| a.0 >= at && a.0 < until).map(|a| a.1.saturating_sub(at)).min().map(ms);
    let failed_sends = r.failed.iter().filter(|w| started_within(w)).count() as u64;
    Unavailability { longest_wait_ms, first_ack_after_ms, failed_sends }
}

/// Each fault's window for [`unavailability`]: (fault, from, until).
fn fault_windows(faults: &[u64]) -> Vec<(u64, u64, u64)> {
    let half_way = |a: u64, b: u64| a + (b.saturating_sub(a)) / 2;
    faults
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            let from = if i == 0 { 0 } else { half_way(faults[i - 1], at) };
            let until = faults.get(i + 1).map_or(u64::MAX, |&next| half_way(at, next));
            (at, from, until)
        })
        .collect()
}

/// The median and the largest of some figures.
fn median_and_max(mut v: Vec<f64>) -> Option<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let max = *v.last()?;
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
    Some((median, max))
}

/// What one member said of its log.
struct MemberLog {
    endpoint: String,
    node: u64,
    first: Option<u64>,
    last: Option<u64>,
    digest: Option<(u32, u64)>,
}

/// Waits until every member reports the same last index, all committed, then digests the
/// range they all hold.
async fn member_logs(members: &str) -> anyhow::Result<(Vec<MemberLog>, Option<(u64, u64)>)> {
    let options = ClientOptions { retry_deadline: Duration::from_secs(2), ..ClientOptions::default() };
    let endpoints = raftmq_client::parse_endpoints(members)?;
    let admins: Vec<(String, Admin)> = endpoints
        .iter()
        .map(|e| Ok((e.clone(), Admin::with_options(e, options.clone())?)))
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let heads = loop {
        let mut heads = Vec::new();
        for (endpoint, admin) in &admins {
            match admin.log_digest(0, 0).await {
                Ok(d) => heads.push((endpoint.clone(), d)),
                Err(e) if started.elapsed() > AGREE_DEADLINE => {
                    return Err(e).with_context(|| format!("member {endpoint} did not answer"));
                }
                Err(_) => break,
            }
        }
        let agreed = heads.len() == admins.len()
            && heads.iter().all(|(_, d)| d.last.is_some() && d.last == heads[0].1.last && d.commit_index == d.last);
        if agreed {
            break heads;
        }
        if started.elapsed() > AGREE_DEADLINE {
            let seen: Vec<String> = heads
                .iter()
                .map(|(e, d)| format!("{e}: node {} last {:?} commit {:?}", d.node_id, d.last, d.commit_index))
                .collect();
            bail!(
                "the members did not agree on a committed last log index within {AGREE_DEADLINE:?}: {}",
                seen.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let from = heads.iter().filter_map(|(_, d)| d.first).max();
    let to = heads.iter().filter_map(|(_, d)| d.last).min().map(|l| l + 1);
    let range = from.zip(to).filter(|(f, t)| f < t);
    let mut out = Vec::new();
    for ((endpoint, head), (_, admin)) in heads.into_iter().zip(&admins) {
        let digest = match range {
            Some((f, t)) => {
                let d = admin
                    .log_digest(f, t)
                    .await
                    .with_context(|| format!("member {endpoint} did not digest its log"))?;
                Some((d.digest, d.entries))
            }
            None => None,
        };
        out.push(MemberLog { endpoint, node: head.node_id, first: head.first, last: head.last, digest });
    }
    Ok((out, range))
}

/// `check`.
#[allow(clippy::print_stdout)]
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let r = read_records(&args)?;
    if !args.healed_at_ms.is_empty() && args.healed_at_ms.len() != args.fault_at_ms.len() {
        bail!("give one --healed-at-ms per --fault-at-ms, or none");
    }
    let faults: Vec<(u64, u64)> = args
        .fault_at_ms
        .iter()
        .enumerate()
        .map(|(i, at)| (at * 1000, args.healed_at_ms.get(i).map_or(u64::MAX, |h| h * 1000)))
        .collect();
    let findings = invariants(&r, &faults);
    let mut t = Table::new(&["INVARIANT", "COUNT", "RESULT"]);
    t.row(vec!["acknowledged sends".into(), r.acked.len().to_string(), String::new()]);
    t.row(vec!["failed sends (outcome unknown)".into(), r.failed.len().to_string(), String::new()]);
    t.row(vec!["deliveries".into(), r.delivered.len().to_string(), String::new()]);
    t.row(vec!["committed-offset samples".into(), r.committed.len().to_string(), String::new()]);
    for f in &findings {
        let result = match (f.must_be_zero, f.failed()) {
            (false, _) => "figure",
            (true, false) => "ok",
            (true, true) => "FAILED",
        };
        t.row(vec![f.name.to_string(), f.count.to_string(), result.to_string()]);
    }
    print!("{}", t.render());
    for f in findings.iter().filter(|f| f.failed()) {
        println!("{}: e.g. {}", f.name, f.examples.join("; "));
    }
    let mut failed = findings.iter().filter(|f| f.failed()).count();
    let starts: Vec<u64> = faults.iter().map(|f| f.0).collect();
    let outages: Vec<Unavailability> =
        fault_windows(&starts).into_iter().map(|(at, from, until)| unavailability(&r, at, from, until)).collect();
    for (i, u) in outages.iter().enumerate() {
        println!(
            "fault {}: longest wait of any send {:.1} ms; first ack of a send started after the fault {} after it; failed sends {}",
            i + 1,
            u.longest_wait_ms,
            u.first_ack_after_ms.map_or_else(|| "never came".to_string(), |ms| format!("{ms:.1} ms")),
            u.failed_sends
        );
    }
    let wait = median_and_max(outages.iter().map(|u| u.longest_wait_ms).collect());
    let first_ack = median_and_max(outages.iter().filter_map(|u| u.first_ack_after_ms).collect());
    if let (Some((wm, wx)), Some((am, ax))) = (wait, first_ack) {
        println!(
            "over {} faults: longest wait median {wm:.1} ms, worst {wx:.1} ms; first ack after the fault median {am:.1} ms, worst {ax:.1} ms",
            outages.len()
        );
    }
    let mut logs_agree = None;
    for members in &args.members {
        let (logs, range) = member_logs(members).await?;
        let agree = logs.windows(2).all(|w| w[0].last == w[1].last && w[0].digest == w[1].digest);
        for l in &logs {
            println!(
                "member {} (node {}): log [{}, {}], digest {}",
                l.endpoint,
                l.node,
                l.first.map_or("-".into(), |v| v.to_string()),
                l.last.map_or("-".into(), |v| v.to_string()),
                l.digest.map_or("-".into(), |(d, n)| format!("{d:08x} over {n} entries"))
            );
        }
        match range {
            Some((f, t)) => println!("members hold the same log over [{f}, {t}): {}", if agree { "yes" } else { "NO" }),
            None => println!("members hold no common range of the log"),
        }
        if !agree {
            failed += 1;
        }
        logs_agree = Some(agree && logs_agree.unwrap_or(true));
    }
    if args.json {
        let invariants: serde_json::Map<String, serde_json::Value> =
            findings.iter().map(|f| (f.name.to_string(), serde_json::json!(f.count))).collect();
        let out = serde_json::json!({
            "acked": r.acked.len(), "failed_sends": r.failed.len(), "deliveries": r.delivered.len(),
            "invariants": invariants, "violations": failed,
            "faults": outages.iter().map(|u| serde_json::json!({
                "longest_wait_ms": u.longest_wait_ms,
                "first_ack_after_ms": u.first_ack_after_ms,
                "failed_sends": u.failed_sends,
            })).collect::<Vec<_>>(),
            "longest_wait_ms": wait.map(|(m, x)| serde_json::json!({ "median": m, "max": x })),
            "first_ack_after_fault_ms": first_ack.map(|(m, x)| serde_json::json!({ "median": m, "max": x })),
            "logs_agree": logs_agree,
        });
        println!("{out}");
    }
    if failed > 0 {
        bail!("{failed} invariants failed");
    }
    println!("every invariant holds");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: u32) -> QueueRef {
        QueueRef::new("broker-a", id)
    }

    fn records() -> Records {
        let mut r = Records::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let i = i as u64;
            r.acked.insert(id.to_string(), (i * 10, i * 10 + 5, 0, i, q(1), Some(i)));
            r.delivered.push((100 + i, q(1), i, id.to_string(), 1, BodyCheck::Ok));
            r.ack_confirmed.insert((q(1), i), 200 + i);
        }
        r.committed = vec![(5, 0, 1, q(1), 1), (7, 0, 2, q(1), 3), (6, 0, 3, q(1), 2)];
        r
    }

    fn count(findings: &[Finding], name: &str) -> u64 {
        findings.iter().find(|f| f.name.starts_with(name)).map_or(u64::MAX, |f| f.count)
    }

    #[test]
    fn a_clean_run_holds_every_invariant() {
        let f = invariants(&records(), &[(0, 100)]);
        assert!(f.iter().all(|f| !f.failed()), "{:?}", f.iter().map(|f| (f.name, f.count)).collect::<Vec<_>>());
    }

    #[test]
    fn a_queue_id_in_two_groups_is_two_queues() {
        let mut r = records();
        // Queue 1 of broker-b: offsets 0 and 1 again, under other ids, with its own committed
        // offsets (a lower index there is another group's log).
        let b = QueueRef::new("broker-b", 1);
        for (i, id) in ["x", "y"].iter().enumerate() {
            let i = i as u64;
            r.acked.insert(id.to_string(), (i * 10, i * 10 + 5, 0, 10 + i, b.clone(), Some(i)));
            r.delivered.push((100 + i, b.clone(), i, id.to_string(), 1, BodyCheck::Ok));
        }
        r.committed.push((2, 0, 1, b.clone(), 1));
        let f = invariants(&r, &[]);
        assert!(f.iter().all(|f| !f.failed()), "{:?}", f.iter().map(|f| (f.name, f.count)).collect::<Vec<_>>());
        // The same records without the group name clash.
        let mut flat = r;
        flat.acked.values_mut().for_each(|a| a.4.broker.clear());
        flat.delivered.iter_mut().for_each(|d| d.1.broker.clear());
        assert_eq!(count(&invariants(&flat, &[]), "positions holding two"), 2);
    }

    #[test]
    fn each_violation_is_counted() {
        let mut r = records();
        // Lost: acknowledged, never delivered; its offset is also a gap.
        r.acked.insert("d".into(), (30, 35, 0, 3, q(1), Some(3)));
        // Two ids at one position, a later send at a lower offset.
        r.acked.insert("e".into(), (40, 45, 0, 4, q(1), Some(1)));
        // Altered body, and delivered again after its confirmed ack.
        r.delivered.push((300, q(1), 0, "a".into(), 2, BodyCheck::Bad));
        // A committed offset going back at a higher index.
        r.committed.push((8, 0, 1, q(1), 2));
        let f = invariants(&r, &[(30, 40)]);
        assert_eq!(count(&f, "acknowledged, never delivered"), 2, "d and e");
        assert_eq!(count(&f, "acknowledged during the fault"), 1);
        assert_eq!(count(&f, "delivered with an altered body"), 1);
        assert_eq!(count(&f, "positions holding two"), 1);
        assert_eq!(count(&f, "offsets never delivered"), 1);
        assert_eq!(count(&f, "a producer's later send"), 1);
        assert_eq!(count(&f, "committed offsets going back"), 1);
        assert_eq!(count(&f, "delivered again after a confirmed ack"), 1);
        assert_eq!(count(&f, "redeliveries"), 1);
    }

    #[test]
    fn unavailability_is_the_longest_wait_and_the_first_ack_after_the_fault() {
        let mut r = records();
        r.failed.push((1000, 4000));
        r.acked.insert("late".into(), (1500, 2600, 1, 0, q(2), Some(0)));
        // Faults at 1.2 ms and 5 ms: the failed send started 1.0 ms is the first one's,
        // although it was still waiting when the second struck.
        let windows = fault_windows(&[1200, 5000]);
        assert_eq!(windows, vec![(1200, 0, 3100), (5000, 3100, u64::MAX)]);
        let u = unavailability(&r, 1200, 0, 3100);
        assert_eq!(u, Unavailability { longest_wait_ms: 3.0, first_ack_after_ms: Some(1.4), failed_sends: 1 });
        let u = unavailability(&r, 5000, 3100, u64::MAX);
        assert_eq!(u, Unavailability { longest_wait_ms: 0.0, first_ack_after_ms: None, failed_sends: 0 });
        assert_eq!(median_and_max(vec![3.0, 1.0, 2.0, 10.0]), Some((2.5, 10.0)));
        assert_eq!(median_and_max(Vec::new()), None);
    }
}
