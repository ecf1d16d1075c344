"""Two optional parts of the benchmark, each `uuid-migrate run` with its defaults on copies of
one pristine database per size:

- scale-out (`--scale-out`): 1, 2 and 4 workers at one size; throughput, and what each run
  spent: CPU seconds of the database's processes and of the tool's, how busy the machine's
  CPUs were, WAL written, and how often a backend was seen waiting on a lock (or on I/O, LWLocks);
- memory as tables grow (`--memory-sizes`): peak RSS of the producer and each worker process
  and Redis memory at each size.
"""

from __future__ import annotations

import itertools
from typing import Any

import psutil

from devtools import bench_data
from devtools.bench_methods import Measured, run_tool
from devtools.bench_sampler import POLL_S, Samples


def scale_out(server: str, redis_url: str, users: int, counts: tuple[int, ...], log: Any) -> str:
    size = bench_data.size_for(users)
    rows = sum(bench_data.counts_of(size).values())
    measured: list[tuple[int, Measured]] = []
    with bench_data.pristine(server, size) as (name, _):
        for workers in counts:
            with bench_data.scratch_db(server, f"{name}_w{workers}", template=name) as url:
                log(f"(scale-out) {workers} worker(s), {users:,} users")
                m = run_tool(url, redis_url, workers, deep=True)
                bench_data.check(url, bench_data.counts_of(size), size.orphans)
            measured.append((workers, m))
    return render_scale(users, rows, measured)


def render_scale(users: int, rows: int, measured: list[tuple[int, Measured]]) -> str:
    cpus = psutil.cpu_count() or 1
    out = [
        f"## Scale-out: 1, 2 and 4 workers ({users:,} users, {rows:,} rows)",
        "",
        f"`uuid-migrate run --workers N --wait`, its defaults, each on its own copy; {cpus} CPUs. "
        f"Sampled every {POLL_S} s by the bench (`devtools/bench_sampler.py`): CPU seconds of the "
        "run database's backends and of the server's WAL writer, checkpointer and background "
        "writer (database), and of the producer and its workers (tool); the machine's busy "
        "share over the run; WAL bytes between start and end (`pg_current_wal_lsn`: the whole "
        "server's, so only meaningful on a quiet one); backends of the run's database seen "
        "waiting, summed over the samples (`pg_stat_activity.wait_event_type`).",
        "",
        "| workers | wall s | rows/s | batches s | database CPU s | tool CPU s | machine busy "
        "| WAL MB | WAL MB/s | lock waits seen | other waits seen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workers, m in measured:
        s = m.samples
        assert s is not None
        waits = ", ".join(f"{k} {v}" for k, v in sorted(s.other_waits.items())) or "-"
        out.append(
            f"| {workers} | {m.seconds:.1f} | {rows / m.seconds:,.0f} | {m.phases['batches']:.1f} "
            f"| {s.cpu_s.get('database', 0):.1f} | {s.cpu_s.get('tool', 0):.1f} "
            f"| {s.machine_busy:.0%} | {s.wal_bytes / 2**20:,.0f} "
            f"| {s.wal_bytes / 2**20 / m.seconds:,.1f} | {s.lock_waits} | {waits} |"
        )
    out += ["", "**Where it stops growing:** " + verdict(measured, cpus), ""]
    return "\n".join(out)


def verdict(measured: list[tuple[int, Measured]], cpus: int) -> str:
    """Each step's gain and the measured limit at the larger count, worded from the figures."""
    parts = []
    for (w1, a), (w2, b) in itertools.pairwise(measured):
        s = b.samples
        assert s is not None
        used = sum(s.cpu_s.values()) / b.seconds
        db_share = s.cpu_s.get("database", 0) / max(sum(s.cpu_s.values()), 1e-9)
        parts.append(
            f"{w1} to {w2} workers: {a.seconds / b.seconds:.2f}x the throughput; at {w2}, "
            f"{limit(s, cpus)} (the run's processes used {used:.2f} CPUs, {db_share:.0%} of it "
            f"the database; WAL {s.wal_bytes / 2**20 / b.seconds:,.1f} MB/s)"
        )
    return "; ".join(parts) + "."


def limit(s: Samples, cpus: int) -> str:
    """CPU if the machine was nearly all busy, else locks or the commonest other wait, else none."""
    if s.machine_busy >= 0.85:
        return f"CPU: the machine's {cpus} CPUs were {s.machine_busy:.0%} busy"
    per_poll = {k: v / max(s.polls, 1) for k, v in s.other_waits.items()}
    per_poll["Lock"] = s.lock_waits / max(s.polls, 1)
    kind, waiting = max(per_poll.items(), key=lambda kv: kv[1])
    if waiting >= 0.5:
        return f"{kind} waits: on average {waiting:.1f} backends waited on {kind} per sample"
    return f"no limit reached: CPUs {s.machine_busy:.0%} busy, {waiting:.1f} backends waiting per sample"


def memory_sizes(server: str, redis_url: str, sizes: list[int], workers: int, log: Any) -> str:
    out = [
        f"## Memory as tables grow (`uuid-migrate run --workers {workers} --wait`)",
        "",
        "Peak RSS sampled every 0.1 s per process; Redis `used_memory` sampled likewise "
        "(the server is shared: its own `used_memory_peak` since start says nothing of one run), "
        "and the Redis database's key count before and after (both shared with anything else "
        "using that server); what the run left: its own keys (`uuid_migrate:<run>:*`, kept by "
        "design for `status`) and its tasks' result keys, by task, from the ids in the logs.",
        "",
        "| users (all rows) | wall s | peak RSS per process (MB) | Redis MB before / peak / after "
        "| Redis keys before / after | left in Redis by the run |",
        "|---|---|---|---|---|---|",
    ]
    for users in sizes:
        size = bench_data.size_for(users)
        counts = bench_data.counts_of(size)
        with bench_data.pristine(server, size) as (name, _), bench_data.scratch_db(
            server, f"{name}_mem", template=name
        ) as url:
            log(f"(memory) {users:,} users")
            m = run_tool(url, redis_url, workers)
            bench_data.check(url, counts, size.orphans)
        s = m.samples
        assert s is not None
        rss = ", ".join(f"{role} {mb:.0f}" for role, mb in sorted(s.rss_mb.items()))
        out.append(
            f"| {users:,} ({sum(counts.values()):,}) | {m.seconds:.1f} | {rss} | "
            f"{s.redis_before:.1f} / {s.redis_peak:.1f} / {s.redis_after:.1f} | "
            f"{s.redis_keys[0]:,} / {s.redis_keys[1]:,} | "
            + ", ".join(f"{k} {v:,}" for k, v in s.run_keys.items()) + " |"
        )
    return "\n".join(out) + "\n"
