"""Benchmark: the issue's plain SQL against `uuid-migrate run`, on the same data, per size.

    python -m devtools.bench [--users 200000,1000000] [--workers 2] [--quick]
                             [--scale-out] [--scale-users N]
                             [--memory-sizes 1000000,3000000] [--[no-]online]
                             [--online-users N] [--output BENCHMARKS.md]

    make bench                                  # the default run, with the online case
    make bench BENCH_ARGS=--quick               # 200,000 users only, no cuts: under 3 minutes
    make bench BENCH_ARGS="--quick --scale-out" # and 1, 2, 4 workers at --scale-users

DATABASE_URL names the server (fresh databases are created there and dropped afterwards);
REDIS_URL is the tool's broker and result backend. Per size, one pristine database is built
and vacuumed; each method runs on its own file copy of it (CREATE DATABASE ... TEMPLATE).
Writes BENCHMARKS.md and its figure, docs/benchmark.png.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools import (
    bench_cuts,
    bench_data,
    bench_online,
    bench_plot,
    bench_report,
    bench_safety,
    bench_scale,
)
from devtools.bench_methods import Measured, plain_sql, run_tool

FIGURE = Path("docs/benchmark.png")


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def measure_size(server: str, users: int, args: argparse.Namespace, last: bool) -> dict[str, Any]:
    """Build one size, run the plain SQL and the tool each on a copy, `--rounds` times in
    turn (which one goes first alternates, so drift in the machine's speed hits both alike);
    each method's median run is reported. The validation and rollback timings on the tool's
    first copy of the last size."""
    size = bench_data.size_for(users)
    counts = bench_data.counts_of(size)
    result: dict[str, Any] = {"users": users, "counts": counts, "rows": sum(counts.values())}
    measured: dict[str, list[Measured]] = {"plain": [], "tool": []}
    with bench_data.pristine(server, size) as (name, build_s):
        log(f"built {result['rows']:,} rows for {users:,} users in {build_s:.0f} s")
        if last and not args.quick:
            with bench_data.scratch_db(server, f"{name}_v", template=name) as url:
                result["baseline"] = bench_safety.baseline(url)
        for round_no in range(args.rounds):
            order = ("plain", "tool") if round_no % 2 == 0 else ("tool", "plain")
            for method in order:
                with bench_data.scratch_db(server, f"{name}_{method}{round_no}", template=name) as url:
                    measured[method].append(_one_method(url, method, users, args))
                    bench_data.check(url, counts, size.orphans)
                    if method == "tool" and round_no == 0 and "baseline" in result:
                        result["safety"] = [result["baseline"], *bench_safety.after_run(url)]
    result["rounds"] = [(p.seconds, t.seconds) for p, t in zip(*measured.values(), strict=True)]
    result["plain"], result["tool"] = (_median(measured[m]) for m in ("plain", "tool"))
    log(f"({users:,}) plain {result['plain'].seconds:.1f} s, tool {result['tool'].seconds:.1f} s")
    return result


def _one_method(url: str, method: str, users: int, args: argparse.Namespace) -> Measured:
    if method == "plain":
        log(f"({users:,}) plain SQL, {args.workers} processes")
        return plain_sql(url, args.workers)
    log(f"({users:,}) uuid-migrate run --workers {args.workers} --wait")
    return run_tool(url, args.redis_url, args.workers)


def _median(runs: list[Measured]) -> Measured:
    """The run of median time (the faster of the two middle ones for an even count)."""
    return sorted(runs, key=lambda m: m.seconds)[(len(runs) - 1) // 2]


def cuts(server: str, args: argparse.Namespace) -> str:
    """Key, composite-key and block-range batches on referencing tables of one size."""
    users = max(args.cut_rows // 5, 1)
    with bench_data.scratch_db(server, f"uuid_migrate_bench_cuts_{os.getpid()}") as url:
        log(f"building 3 x {args.cut_rows:,} referencing rows for the cuts")
        bench_cuts.build(url, users, args.cut_rows)
        log("(cuts) `uuid-migrate run` on key, composite and block ranges")
        measured = bench_cuts.measure(url, args)
    return bench_cuts.render(measured, users, args.cut_rows, args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
        return int(text)

    def sizes(text: str) -> list[int]:
        return [positive(part.strip().replace("_", "")) for part in text.split(",")]

    p = argparse.ArgumentParser(prog="python -m devtools.bench", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=sizes, default=None,
                   help="sizes of the issue's table, comma-separated (default 200000,1000000)")
    p.add_argument("--workers", type=positive, default=2, help="default 2")
    p.add_argument("--quick", action="store_true",
                   help="200,000 users only (unless --users), no cuts, no validate/rollback")
    p.add_argument("--rounds", type=positive, default=1,
                   help="runs of each method per size, in alternating order; the median is "
                   "reported (default 1)")
    p.add_argument("--scale-out", action="store_true", help="also 1, 2 and 4 workers")
    p.add_argument("--scale-users", type=positive, default=100_000, help="default 100,000")
    p.add_argument("--memory-sizes", type=sizes, default=[],
                   help="also peak memory at these sizes, e.g. 1000000,3000000")
    p.add_argument("--online", action=argparse.BooleanOptionalAction, default=None,
                   help="the online case: an application writing during runs (default: on, off with --quick)")
    p.add_argument("--online-users", type=positive, default=200_000, help="default 200,000")
    p.add_argument("--cut-rows", type=positive, default=500_000, help="default 500,000")
    p.add_argument("--output", default="BENCHMARKS.md", help="report (default BENCHMARKS.md)")
    args = p.parse_args(argv)
    if args.online is None:
        args.online = not args.quick
    if args.users is None:
        args.users = [200_000] if args.quick else [200_000, 1_000_000]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server, args.redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not server or not args.redis_url:
        raise SystemExit("bench: set DATABASE_URL (any database on the server) and REDIS_URL")
    command = ["python", "-m", "devtools.bench", *(sys.argv[1:] if argv is None else argv)]
    info = {"command": shlex.join(command), "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}"}
    info |= bench_report.environment(server)
    users = sorted(args.users)
    sizes = [measure_size(server, n, args, last=n == users[-1]) for n in users]
    figure = Path(args.output).resolve().parent / FIGURE
    bench_plot.draw(figure, [{**s, "label": f"{s['users']:,} users"} for s in sizes])
    parts = [bench_report.head(info, sizes, args.workers)]
    parts += [bench_report.size_section(s, args.workers) for s in sizes]
    if "safety" in sizes[-1]:
        parts.append(bench_report.safety_section(sizes[-1]["safety"], sizes[-1]["users"]))
    if args.scale_out:
        parts.append(bench_scale.scale_out(server, args.redis_url, args.scale_users, (1, 2, 4), log))
    if args.memory_sizes:
        parts.append(bench_scale.memory_sizes(server, args.redis_url, args.memory_sizes,
                                              args.workers, log))
    if args.online:
        log(f"(online) an application writing during runs, {args.online_users:,} users")
        parts.append(bench_online.online_section(
            server, args.redis_url, args.online_users, args.workers, command=info["command"]))  # fmt: skip
    if not args.quick:
        parts.append(cuts(server, args))
    text = "\n".join(parts)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
