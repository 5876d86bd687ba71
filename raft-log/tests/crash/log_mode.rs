//! The crash test's operations run through [`Log`] (its writer thread and sync policy)
//! instead of on [`raft_log::LogCore`] directly. Appends are queued without waiting for
//! their callbacks, so crashes land among batches in flight. Every other operation is
//! awaited: it is durable on return, under either policy. Under [`SyncPolicy::EveryBatch`]
//! every append reported before the crash counts as durable too; under
//! [`SyncPolicy::Interval`] a reported append may be lost, but what survives is a prefix.

use std::path::Path;
use std::sync::{Arc, Mutex};

use raft_log::fs::Fs;
use raft_log::{Log, LogConfig, LogError, SyncPolicy};

use super::support::small_config;
use super::{DIR, Gen, Model, OpSpec, RoundRun, Step, purge_id, resolve, vote_bytes};
use raft_log::sim::SimFs;

/// The configuration of the log under `sync`.
fn config(sync: SyncPolicy) -> LogConfig {
    LogConfig { sync, ..small_config() }
}

/// Index and term of the last record whose append was reported, with the error of a
/// failed report if any.
type Reported = Arc<Mutex<Option<(u64, u64)>>>;

async fn exec(log: &Log, step: &Step, reported: &Reported) -> raft_log::Result<()> {
    match step {
        Step::Append(rs) => {
            let last = rs.last().map(|r| (r.index, r.term));
            let reported = reported.clone();
            let done = Box::new(move |r: raft_log::Result<()>| {
                if r.is_ok() {
                    *reported.lock().expect("no test thread panics holding it") = last;
                }
            });
            log.append(rs.clone(), done).await
        }
        Step::Sync => log.flush().await,
        Step::Truncate(k) => log.truncate_after(*k).await,
        Step::Purge(p) => log.purge(*p, purge_id(*p)).await,
        Step::SaveVote(v) => log.save_vote(vote_bytes(*v)).await,
        Step::Backfill(rs) => log.backfill(rs.clone()).await.map(|_| ()),
    }
}

/// Runs `ops` through a [`Log`] under `sync` on `fs`, then shuts the log down, so that the
/// writer thread has left the files alone before the crash is simulated.
pub(super) fn run_ops(
    fs: &SimFs,
    model: &Model,
    g: &mut Gen,
    ops: &[OpSpec],
    trace: &mut Vec<String>,
    sync: SyncPolicy,
) -> RoundRun {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime can be built");
    runtime.block_on(run_ops_async(fs, model, g, ops, trace, sync))
}

async fn run_ops_async(
    fs: &SimFs,
    model: &Model,
    g: &mut Gen,
    ops: &[OpSpec],
    trace: &mut Vec<String>,
    sync: SyncPolicy,
) -> RoundRun {
    let mut run = RoundRun { before: model.clone(), failed: None, error: None, marks: vec![fs.mutations()] };
    let shared: Arc<dyn Fs> = Arc::new(fs.clone());
    let log = match Log::open_with(shared, Path::new(DIR), config(sync)) {
        Ok((log, _)) => log,
        Err(e) => {
            trace.push(format!("open -> {e}"));
            run.error = Some(e);
            return run;
        }
    };
    run.marks.push(fs.mutations());
    let reported: Reported = Arc::default();
    for spec in ops {
        let step = resolve(spec, &run.before, g);
        let after = run.before.after(&step);
        match exec(&log, &step, &reported).await {
            Ok(()) => {
                trace.push(step.to_string());
                run.before = after;
                run.marks.push(fs.mutations());
            }
            Err(e) => {
                trace.push(format!("{step} -> {e}"));
                run.failed = Some((step, after));
                run.error = Some(e);
                break;
            }
        }
    }
    let shutdown = log.shutdown().await;
    trace.push(format!("shutdown -> {shutdown:?}"));
    run.marks.push(fs.mutations());
    if let (Err(e), None) = (shutdown, &run.error) {
        // A batch in flight failed: no awaited operation saw it.
        run.error = Some(e);
    }
    let reported = *reported.lock().expect("no test thread panics holding it");
    if let (SyncPolicy::EveryBatch, Some((index, term))) = (sync, reported) {
        // Reported means durable: the model's durable prefix reaches that record (unless a
        // later truncation or purge removed it, which made the rest durable anyway).
        let at = run.before.entries.iter().position(|r| r.index == index && r.term == term);
        if let Some(at) = at {
            run.before.durable = run.before.durable.max(at + 1);
            trace.push(format!("reported durable up to #{index} term {term}"));
        }
    }
    run
}

/// Whether `e` is the simulated crash, as the engine or the stopped log reports it.
pub(super) fn from_crash(e: &LogError) -> bool {
    match e {
        LogError::Io { source, .. } => source.to_string() == "simulated crash",
        LogError::Stopped(why) => why.contains("simulated crash"),
        _ => false,
    }
}
