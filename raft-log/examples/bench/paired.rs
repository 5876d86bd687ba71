//! Paired goal measurements: the goals are judged on rounds of the matching raw test and
//! log row run back to back, each round's ratio taken between neighbours in time.
//!
//! A shared or cloud disk's speed can swing several times over from one minute to the
//! next, so a log row compared with a raw limit measured a minute apart (and the best of
//! two such passes) judges the disk's moods, not the engine. Here each round runs the raw
//! test and the log row with the same short duration, one right after the other (the order
//! alternating from round to round, so that a steady trend favours neither), and the
//! verdict is the median of the rounds' ratios.

use std::path::Path;

use anyhow::Context;
use raft_log::SyncPolicy;

use super::{
    GOAL_FSYNC_PCT, GOAL_SEQ_PCT, RawKind, RawLimits, RowResult, RowSpec, Settings, blocking, log_row, pct, raw_run,
    settle, size_label,
};

/// A goal the log is held to, with the log row and raw tests it is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    /// Batch 1 of 1 KiB entries against the raw 4 KiB pwrite + fdatasync (fsyncs/s).
    Fsync,
    /// Batch 256 of 16 KiB entries (4 MiB an append) against the raw 4 MiB pwrite +
    /// fdatasync, the better of its two layouts (MB/s).
    Sequential,
}

impl Goal {
    pub(crate) const ALL: [Goal; 2] = [Goal::Fsync, Goal::Sequential];

    /// The log row judged.
    pub(crate) fn spec(self) -> RowSpec {
        let (entry_bytes, batch) = match self {
            Goal::Fsync => (1 << 10, 1),
            Goal::Sequential => (16 << 10, 256),
        };
        RowSpec { entry_bytes, batch, depth: 1, sync: SyncPolicy::EveryBatch }
    }

    /// The raw tests of a round; the round's raw figure is the best of them, as the limit
    /// in the tables is.
    fn raw_kinds(self) -> &'static [RawKind] {
        match self {
            Goal::Fsync => &[RawKind::Fsync],
            Goal::Sequential => &[RawKind::Sequential, RawKind::SequentialShifted],
        }
    }

    fn goal_pct(self) -> f64 {
        match self {
            Goal::Fsync => GOAL_FSYNC_PCT,
            Goal::Sequential => GOAL_SEQ_PCT,
        }
    }

    /// The row's figure in the raw test's unit (an entry of batch 1 costs one fsync).
    fn log_rate(self, row: &RowResult) -> f64 {
        match self {
            Goal::Fsync => row.entries_per_s,
            Goal::Sequential => row.mb_per_s,
        }
    }

    /// The table row's ratio to the unpaired limit.
    fn unpaired_pct(self, row: &RowResult, raw: &RawLimits) -> f64 {
        match self {
            Goal::Fsync => pct(row.entries_per_s, raw.fsyncs_per_s()),
            Goal::Sequential => pct(row.mb_per_s, raw.seq_mb_per_s()),
        }
    }

    fn title(self) -> String {
        let spec = self.spec();
        let raw = match self {
            Goal::Fsync => "4 KiB pwrite + fdatasync",
            Goal::Sequential => "4 MiB pwrite + fdatasync, the better of aligned and 64 B shifted",
        };
        format!("batch {}, {} entries vs {raw}", spec.batch, size_label(spec.entry_bytes))
    }

    fn unit(self) -> &'static str {
        match self {
            Goal::Fsync => "fsyncs/s",
            Goal::Sequential => "MB/s",
        }
    }
}

/// One round: the raw figures (one per [`Goal::raw_kinds`]) and the log's, in the raw unit.
#[derive(Debug, Clone)]
struct Round {
    raw: Vec<f64>,
    log: f64,
}

impl Round {
    fn raw_best(&self) -> f64 {
        self.raw.iter().copied().fold(0.0, f64::max)
    }

    fn ratio_pct(&self) -> f64 {
        pct(self.log, self.raw_best())
    }
}

/// Every round of one goal.
#[derive(Debug, Clone)]
pub(crate) struct Paired {
    goal: Goal,
    rounds: Vec<Round>,
}

impl Paired {
    /// The rounds' ratios, ascending.
    fn sorted_ratios(&self) -> Vec<f64> {
        let mut ratios: Vec<f64> = self.rounds.iter().map(Round::ratio_pct).collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    }

    /// Median of the rounds' ratios in percent (the mean of the middle two for an even count).
    fn median_pct(&self) -> f64 {
        let r = self.sorted_ratios();
        match r.len() {
            0 => 0.0,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }
}

/// Runs the raw tests of one round, each on a fresh file, settling after each.
async fn raw_half(dir: &Path, settings: &Settings, goal: Goal) -> anyhow::Result<Vec<f64>> {
    let mut figures = Vec::with_capacity(goal.raw_kinds().len());
    for (i, &kind) in goal.raw_kinds().iter().enumerate() {
        let run = move |dir: &Path, s: &Settings| {
            let figure = raw_run(&dir.join(format!("paired-raw-{i}")), s.raw_chunk(), kind, s.paired_duration)?;
            settle(dir)?;
            Ok(figure.rate)
        };
        figures.push(blocking(dir, settings, run).await?);
    }
    Ok(figures)
}

/// Measures `settings.rounds` paired rounds of each goal in `goals`.
pub(crate) async fn measure(dir: &Path, settings: &Settings, goals: &[Goal]) -> anyhow::Result<Vec<Paired>> {
    // The log rows run for the paired duration; `log_row` takes it from the settings.
    let short = Settings { duration: settings.paired_duration, ..settings.clone() };
    let mut all = Vec::with_capacity(goals.len());
    for &goal in goals {
        let mut rounds = Vec::with_capacity(settings.rounds);
        for round in 1..=settings.rounds {
            eprintln!("bench: paired, {}, round {round} of {}", goal.title(), settings.rounds);
            let raw_first = round % 2 == 1;
            let mut raw = Vec::new();
            if raw_first {
                raw = raw_half(dir, &short, goal).await?;
            }
            let row = log_row(dir, &short, goal.spec()).await.with_context(|| format!("paired round {round}"))?;
            if !raw_first {
                raw = raw_half(dir, &short, goal).await?;
            }
            rounds.push(Round { raw, log: goal.log_rate(&row) });
        }
        all.push(Paired { goal, rounds });
    }
    Ok(all)
}

/// Prints every round of every goal and the median ratios.
pub(crate) fn print(pairs: &[Paired], settings: &Settings) {
    if pairs.is_empty() {
        return;
    }
    println!(
        "Paired goal measurements: {} rounds, each the raw test and the log row back to back, {:.1} s each",
        settings.rounds,
        settings.paired_duration.as_secs_f64()
    );
    println!("on fresh files (raw first in odd rounds, the log first in even ones); the ratio is the round's own:");
    for p in pairs {
        println!("  {}:", p.goal.title());
        let unit = p.goal.unit();
        let decimals = if p.goal == Goal::Fsync { 0 } else { 1 };
        let raw_heads: Vec<String> = match p.goal {
            Goal::Fsync => vec![format!("raw {unit}")],
            Goal::Sequential => vec!["aligned MB/s".to_string(), "shifted MB/s".to_string()],
        };
        let heads: String = raw_heads.iter().map(|h| format!("  {h:>13}")).collect();
        let log_head = if p.goal == Goal::Fsync { "log entries/s" } else { "log MB/s" };
        println!("    {:>5}{heads}  {log_head:>13}  {:>6}", "round", "ratio");
        for (i, r) in p.rounds.iter().enumerate() {
            let raws: String = r.raw.iter().map(|v| format!("  {v:>13.decimals$}")).collect();
            println!("    {:>5}{raws}  {:>13.decimals$}  {:>5.0}%", i + 1, r.log, r.ratio_pct());
        }
        let ratios = p.sorted_ratios();
        let (lo, hi) = (ratios.first().copied().unwrap_or(0.0), ratios.last().copied().unwrap_or(0.0));
        println!("    median ratio {:.0}% (rounds ranged {lo:.0}%..{hi:.0}%)", p.median_pct());
    }
    println!();
}

fn print_goal(claim: String, p: f64, goal: f64, detail: String) {
    let verdict = if p >= goal { "PASS" } else { "BELOW" };
    println!("  {claim:<70}  {verdict:<5}  {detail}");
}

/// Prints the goal verdicts, each on the median of its paired rounds.
pub(crate) fn print_goals(rows: &[RowResult], raw: &RawLimits, pairs: &[Paired]) {
    println!("Goals, judged on the paired medians above (figures only; the exit status never depends on them):");
    for p in pairs {
        let median = p.median_pct();
        let (spec, goal) = (p.goal.spec(), p.goal.goal_pct());
        let claim = match p.goal {
            Goal::Fsync => format!("batch 1 reaches {median:.0}% of raw fsyncs/s, paired (goal ≥ {goal:.0}%)"),
            Goal::Sequential => {
                format!("batch {} reaches {median:.0}% of raw sequential MB/s, paired (goal ≥ {goal:.0}%)", spec.batch)
            }
        };
        let unpaired = match rows.iter().find(|r| r.spec.label() == spec.label()) {
            Some(row) => format!("; unpaired in the table: {:.0}%", p.goal.unpaired_pct(row, raw)),
            None => String::new(),
        };
        let detail = format!("{} entries, median of {} rounds{unpaired}", size_label(spec.entry_bytes), p.rounds.len());
        print_goal(claim, median, goal, detail);
    }
    if let Some(r) = rows.iter().find(|r| r.spec.label() == Goal::Fsync.spec().label()) {
        let over = raw.best(RawKind::FsyncOverwrite).rate;
        println!(
            "  for reference: batch 1 is {:.0}% of the {over:.0} fsyncs/s of overwriting written blocks; on ext4",
            pct(r.entries_per_s, over)
        );
        println!("  and XFS a sync that first touches fallocated (unwritten) space also commits the journal, so");
        println!("  freshly preallocated segments cannot reach that rate");
    }
}
