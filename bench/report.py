"""The report of bench/compare.sh: reads the JSON figures of a run's results directory and
prints the table (each cell the median of its rounds), the goals (met / NOT met) and the
raftmq extras (consume, end-to-end latency, CPU per message).

Usage: python3 bench/report.py RESULTS_DIR            the report; exit 1 if figures are missing
       python3 bench/report.py --peak-rate RESULTS_DIR  raftmq's 64 x 1 KiB median msg/s
"""

import glob
import json
import os
import re
import statistics
import sys

MIB = 1 << 20
CELLS = [(1, 1024), (64, 1024), (1, 16384), (64, 16384)]


def load(path):
    with open(path) as f:
        return json.load(f)


def runs(results, kind, producers, body):
    """Every round's figures of one system and cell, in round order."""
    pattern = os.path.join(results, f"{kind}-p{producers}-b{body}-r*.json")
    paths = sorted(glob.glob(pattern), key=lambda p: int(re.search(r"-r(\d+)\.json$", p).group(1)))
    if not paths:
        raise SystemExit(f"report: no figures for {kind} {producers} x {body} B in {results}")
    return [load(p) for p in paths]


def figures(run, body):
    """msg/s, MiB/s, p50 and p99 (ms) of one run, whatever printed it."""
    latency = run.get("ack_latency") or run.get("latency")
    return {
        "msg": run["msg_per_s"],
        "mib": run["msg_per_s"] * body / MIB,
        "p50": latency["p50_ms"],
        "p99": latency["p99_ms"],
    }


def medians(rs, body):
    each = [figures(r, body) for r in rs]
    return {k: statistics.median(f[k] for f in each) for k in each[0]}


def size(body):
    return f"{body // 1024} KiB"


def rate(x):
    return f"{x:,.0f} msg/s"


def cell_text(f, producers, body):
    """What a row shows: msg/s and p50 (1 producer), msg/s and p99 (64 x 1 KiB), MiB/s."""
    if producers == 1:
        return f"{rate(f['msg'])}, p50 {f['p50']:.2f} ms"
    if body == 1024:
        return f"{rate(f['msg'])}, p99 {f['p99']:.2f} ms"
    return f"{f['mib']:.1f} MiB/s"


def ratio_text(r, n, producers, body):
    if producers == 1:
        return f"{r['msg'] / n['msg']:.2f}× msg/s, p50 {r['p50'] / n['p50']:.2f}×"
    if body == 1024:
        return f"{r['msg'] / n['msg']:.2f}× msg/s, p99 {r['p99'] / n['p99']:.2f}×"
    return f"{r['mib'] / n['mib']:.2f}× MiB/s"


def table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    out = [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows[1:]]
    return "\n".join(out)


def verdict(ok):
    return "met" if ok else "NOT met"


def perf_counts(path):
    """Counter values of `perf stat -x,` by event name, or the reason there are none."""
    with open(path) as f:
        text = f.read()
    counts, reason = {}, None
    for row in text.splitlines():
        fields = row.split(",")
        if len(fields) < 3 or row.startswith("#"):
            if row.strip() and not row.startswith("#"):
                reason = reason or row.strip()
            continue
        value, event = fields[0], fields[2]
        if value.startswith("<"):
            counts[event] = None
            reason = reason or f"{event} {value}"
        else:
            counts[event] = float(value)
    return counts, reason


def cpu_lines(results):
    lines = []
    pmu = os.path.join(results, "pmu.txt")
    pmu_note = open(pmu).read().strip() if os.path.exists(pmu) else None
    for producers in (1, 64):
        run = load(os.path.join(results, f"cpu-p{producers}.json"))
        acked = run["sent"]
        counts, reason = perf_counts(os.path.join(results, f"cpu-p{producers}.perf"))
        who = f"raftmq, {producers} producer{'s' if producers > 1 else ''} × 1 KiB, {acked:,} acked"
        ins = counts.get("instructions")
        if ins is not None and acked:
            lines.append(f"instructions per acknowledged message ({who}): {ins / acked:,.0f} (all three nodes)")
        else:
            why = reason or "no count"
            if pmu_note:
                why += f"; {pmu_note}"
            lines.append(f"instructions per acknowledged message ({who}): not available (perf: {why})")
        clock = counts.get("task-clock")
        if clock is not None and acked:
            lines.append(f"  CPU time of mqbroker dev per acknowledged message: {clock * 1000 / acked:,.0f} us (task-clock)")
    return lines


def extras(results, send_64):
    out = []
    backlog = load(os.path.join(results, "backlog.json"))
    consume = load(os.path.join(results, "consume.json"))
    params = load(os.path.join(results, "params.json"))
    cap = f"stopped at the {params['drain_cap_s']} s cap"
    short = f", {cap} of {params['backlog']:,}" if backlog["sent"] < params["backlog"] else ""
    out.append(
        f"backlog: {backlog['sent']:,} × 1 KiB from 64 producers at {rate(backlog['msg_per_s'])}"
        f" ({backlog['errors']} errors{short})"
    )
    ok = consume["msg_per_s"] >= send_64
    short = f", {cap}" if consume["delivered"] < backlog["sent"] else ""
    out.append(
        f"consume: 8 consumers received and acked {consume['delivered']:,} at {rate(consume['msg_per_s'])}"
        f" ({consume['redelivered']} redelivered, {consume['ack_errors']} ack errors{short});"
        f" 64 × 1 KiB send rate {rate(send_64)}"
    )
    out.append(f"goal consume ≥ 64-producer send rate: {verdict(ok)} ({consume['msg_per_s'] / send_64:.2f}×)")
    produce = load(os.path.join(results, "e2e-produce.json"))
    e2e = load(os.path.join(results, "e2e-consume.json"))["end_to_end_latency"]
    out.append(
        f"end-to-end (send to receive) at half the 64 × 1 KiB send rate: target {rate(produce['target_rate'])},"
        f" sent {rate(produce['msg_per_s'])}; p50 {e2e['p50_ms']:.2f} ms, p99 {e2e['p99_ms']:.2f} ms,"
        f" max {e2e['max_ms']:.2f} ms ({e2e['count']:,} messages)"
    )
    out.append(f"goal end-to-end p50 ≤ 2 ms: {verdict(e2e['p50_ms'] <= 2.0)} (p50 {e2e['p50_ms']:.2f} ms)")
    return out


def error_notes(results):
    notes = []
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        run = load(path)
        errors = run.get("errors") or run.get("receive_errors") or 0
        if errors:
            first = run.get("first_error") or "?"
            notes.append(f"note: {os.path.basename(path)}: {errors} failed ({first})")
    return notes


def report(results):
    setup = os.path.join(results, "setup.txt")
    if os.path.exists(setup):
        print(open(setup).read().strip())
    rows = [["producers × body", "fsync limit (1 writer)", "NATS JetStream R3", "raftmq", "raftmq / NATS"]]
    med = {}
    for producers, body in CELLS:
        fs = medians(runs(results, "fsync", producers, body), body)
        nats = medians(runs(results, "nats", producers, body), body)
        mq = medians(runs(results, "raftmq", producers, body), body)
        med[(producers, body)] = (nats, mq)
        rows.append([
            f"{producers} × {size(body)}",
            cell_text(fs, producers, body),
            cell_text(nats, producers, body),
            cell_text(mq, producers, body),
            ratio_text(mq, nats, producers, body),
        ])
    rounds = len(runs(results, "raftmq", *CELLS[0]))
    print(f"\nmedian of {rounds} round(s); ack latency from send to acknowledgement (both: fsynced on a quorum of 3)")
    print(table(rows))
    if rounds > 1:
        print("each round, msg/s NATS / raftmq:")
        for producers, body in CELLS:
            pairs = zip(runs(results, "nats", producers, body), runs(results, "raftmq", producers, body))
            each = ", ".join(f"{n['msg_per_s']:,.0f} / {r['msg_per_s']:,.0f}" for n, r in pairs)
            print(f"  {producers} × {size(body)}: {each}")
    print()
    n, r = med[(1, 1024)]
    ok = r["p50"] <= 0.6 and r["msg"] >= 1.5 * n["msg"]
    print(
        f"goal 1 producer × 1 KiB, raftmq ack p50 ≤ 0.6 ms and ≥ 1.5× NATS msg/s: {verdict(ok)}"
        f" (p50 {r['p50']:.2f} ms; {rate(r['msg'])} = {r['msg'] / n['msg']:.2f}× NATS's {rate(n['msg'])})"
    )
    n, r = med[(64, 1024)]
    ok = r["msg"] >= 3 * n["msg"] and r["p99"] <= 10.0
    print(
        f"goal 64 producers × 1 KiB, ≥ 3× NATS msg/s with p99 ≤ 10 ms: {verdict(ok)}"
        f" ({rate(r['msg'])} = {r['msg'] / n['msg']:.2f}× NATS's {rate(n['msg'])}; p99 {r['p99']:.2f} ms)"
    )
    n, r = med[(64, 16384)]
    ok = r["mib"] >= 3 * n["mib"]
    print(
        f"goal 64 producers × 16 KiB, ≥ 3× NATS MiB/s: {verdict(ok)}"
        f" ({r['mib']:.1f} MiB/s = {r['mib'] / n['mib']:.2f}× NATS's {n['mib']:.1f} MiB/s)"
    )
    print()
    for line in extras(results, med[(64, 1024)][1]["msg"]) + cpu_lines(results) + error_notes(results):
        print(line)


def main(argv):
    if len(argv) == 3 and argv[1] == "--peak-rate":
        print(round(medians(runs(argv[2], "raftmq", 64, 1024), 1024)["msg"]))
    elif len(argv) == 2 and not argv[1].startswith("-"):
        report(argv[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except (OSError, KeyError, ValueError) as e:
        raise SystemExit(f"report: the figures are incomplete or unreadable: {e}")
