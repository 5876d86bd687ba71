//! The drill tools against a three-process group: `mqadmin bench produce --record` and
//! `bench consume --record` write their records, `mqadmin check` finds every invariant
//! holding and the members' logs equal; the same records with one delivery removed, or
//! one body altered, fail the check naming the invariant.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use raftmq_tests::cluster::{Cluster, ClusterOptions, binary};

fn mqadmin(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(binary("mqadmin")?).args(args).output()?;
    Ok(out)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The COUNT and RESULT cells of the report's row named `name`.
fn row<'a>(report: &'a str, name: &str) -> Vec<&'a str> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with("  ")))
        .map(|rest| rest.split_whitespace().collect())
        .unwrap_or_default()
}

fn check(endpoints: &str, sends: &Path, deliveries: &Path) -> anyhow::Result<Output> {
    let (sends, deliveries) = (sends.display().to_string(), deliveries.display().to_string());
    mqadmin(&["check", "--sends", &sends, "--deliveries", &deliveries, "--members", endpoints])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_runs_are_checked_and_tampering_is_caught() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), &ClusterOptions::default())?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = cluster.endpoints().join(";");
    let (sends, deliveries) = (dir.path().join("sends"), dir.path().join("deliveries"));
    let (sends_s, deliveries_s) = (sends.display().to_string(), deliveries.display().to_string());

    let out = mqadmin(&[
        "--endpoints",
        &endpoints,
        "bench",
        "produce",
        "--topic",
        "Checked",
        "--producers",
        "4",
        "--messages",
        "2000",
        "--seconds",
        "120",
        "--record",
        &sends_s,
        "--json",
        "--quiet",
    ])?;
    anyhow::ensure!(out.status.success(), "bench produce failed: {}", text(&out));
    let figures: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').find(|l| l.starts_with(b"{")).unwrap_or_default())?;
    anyhow::ensure!(figures["sent"] == 2000 && figures["errors"] == 0, "unexpected figures {figures}");
    for key in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        anyhow::ensure!(figures["ack_latency"][key].is_number(), "no {key} in {figures}");
    }

    let out = mqadmin(&[
        "--endpoints",
        &endpoints,
        "bench",
        "consume",
        "--topic",
        "Checked",
        "--group",
        "CheckedGroup",
        "--consumers",
        "3",
        "--messages",
        "2000",
        "--seconds",
        "120",
        "--record",
        &deliveries_s,
        "--quiet",
    ])?;
    anyhow::ensure!(out.status.success(), "bench consume failed: {}", text(&out));
    anyhow::ensure!(text(&out).contains("messages received: 2000"), "{}", text(&out));

    let out = check(&endpoints, &sends, &deliveries)?;
    let report = text(&out);
    anyhow::ensure!(out.status.success(), "check failed on a clean run: {report}");
    anyhow::ensure!(row(&report, "acknowledged sends") == ["2000"], "{report}");
    anyhow::ensure!(row(&report, "acknowledged, never delivered (lost)") == ["0", "ok"], "{report}");
    anyhow::ensure!(report.contains("every invariant holds"), "{report}");
    anyhow::ensure!(report.contains("members hold the same log over") && report.contains(": yes"), "{report}");
    anyhow::ensure!(report.matches("member 127.0.0.1").count() == 3, "three members digested: {report}");

    // One delivery removed: that message is lost and its offset a gap.
    let all = std::fs::read_to_string(&deliveries)?;
    let first_delivery = all.lines().position(|l| l.starts_with("D ")).unwrap_or_default();
    let removed = dir.path().join("deliveries-removed");
    let kept: Vec<&str> = all.lines().enumerate().filter(|(i, _)| *i != first_delivery).map(|(_, l)| l).collect();
    std::fs::write(&removed, kept.join("\n"))?;
    let out = check(&endpoints, &sends, &removed)?;
    let report = text(&out);
    anyhow::ensure!(!out.status.success(), "check passed with a delivery missing: {report}");
    anyhow::ensure!(row(&report, "acknowledged, never delivered (lost)") == ["1", "FAILED"], "{report}");

    // One body reported altered.
    let altered = dir.path().join("deliveries-altered");
    let mut lines: Vec<String> = all.lines().map(str::to_string).collect();
    if let Some(line) = lines.get_mut(first_delivery) {
        *line = line.replace(" ok", " bad");
    }
    std::fs::write(&altered, lines.join("\n"))?;
    let out = check(&endpoints, &sends, &altered)?;
    let report = text(&out);
    anyhow::ensure!(!out.status.success(), "check passed with an altered body: {report}");
    anyhow::ensure!(row(&report, "delivered with an altered body") == ["1", "FAILED"], "{report}");
    Ok(())
}
