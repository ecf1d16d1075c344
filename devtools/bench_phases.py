"""Where a run's time went: its phases, from the ledger's timestamps, the workers' logs and
the moment the bench saw the first worker process start.

The phases follow one another, so they add up to the run's wall time:

- start-up and planning: the CLI starting, reading the catalog, opening the run;
- snapshots: each table's definition and data checksum (up to the first DDL step);
- DDL: `id_mappings`, its indexes and the added columns (up to the first trigger);
- triggers: the tables' row triggers;
- batch planning: walking the keys into batches; up to the first stage started (its first
  page sent, before the local workers are waited for);
- until the first batch: the local workers, which start with the command and come up
  meanwhile, if they are not up yet, and the first pages reaching them;
- batches: time in which at least one batch ran, first batch start to last batch end;
- hand-offs between tables: the rest of that span, when no batch ran (callbacks, a closing
  table's sweep before its children start);
- closing the last tables: last batch end to the validation's start (their final sweep and
  unique index);
- validation: the validate task, from its log line;
- noticing the end, stopping the workers: validation's end to the last moment a worker
  process was seen (sampled every 0.1 s);
- producer exit: from there to the producer's exit.

Each table's own closing is given too (`closing`), overlapping other tables' batches: from
its last batch to the start of its final sweep (a page's callback waits in the queue behind
the batches already sent, then sends the index's task and sweeps), the sweep (to the
table's hand-off to its dependents, or the stage's end without one), and its unique index,
built beside the sweep (from the sweep's start to the index's record in the ledger).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from typing import Any

from uuid_migrate.ledger import timeline

#: A worker's log line saying it is ready: its time.
READY_LINE = re.compile(r"^\[?([\d-]+ [\d:,]+)[^\n]*? celery\.apps\.worker: \S+ ready\.$", re.MULTILINE)
#: A Celery worker's log line for a finished task: end time, task name, seconds.
TASK_LINE = re.compile(
    r"^\[?([\d-]+ [\d:,]+)[^\n]*? Task uuid_migrate\.(\w+)\[[^\]]+\] succeeded in ([\d.]+)s",
    re.MULTILINE,
)

#: The phase both methods have: the plain SQL walks its keys too.
PLANNING = "batch planning"

Batch = tuple[str, float, float, int]  # table, start, end (seconds from a t0), rows


def ledger_batches(cur: Any, run_id: str, t0: float) -> list[Batch]:
    """The run's succeeded batches from the ledger, times in seconds from `t0` (epoch)."""
    return [(t, s - t0, e - t0, n) for t, s, e, n in timeline.succeeded_batches(cur, run_id)]


def task_times(logs: str) -> dict[str, list[tuple[float, float]]]:
    """(start, end) epoch seconds of each finished task, by task name."""
    found: dict[str, list[tuple[float, float]]] = {}
    for stamp, task, seconds in TASK_LINE.findall(logs):
        end = _stamp(stamp)
        found.setdefault(task, []).append((end - float(seconds), end))
    return found


def busy(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one interval."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def tool_phases(
    cur: Any, run: dict[str, Any], logs: str, times: tuple[float, float | None, float | None, float]
) -> dict[str, float]:
    """The phases, in order, in seconds; `times`: the producer's launch, the first worker
    process's start, the last moment a worker was seen, the producer's exit (epoch)."""
    launched, _, workers_gone, ended = times
    run_id = run["run_id"]
    marks = _marks(cur, run_id)
    batches = ledger_batches(cur, run_id, 0.0)
    if not batches:
        raise SystemExit("bench: the run has no succeeded batches in the ledger")
    first, last = min(b[1] for b in batches), max(b[2] for b in batches)
    validations = task_times(logs).get("validate") or [(run["finished_at"].timestamp(),) * 2]
    validate_start, validate_end = validations[-1]
    ran = busy([(s, e) for _, s, e, _ in batches])
    points = [
        ("start-up and planning", launched),
        ("snapshots", marks["snapshots"]),
        ("DDL (id_mappings, columns)", marks["ddl"]),
        ("triggers", marks["triggers"]),
        (PLANNING, marks["planned"]),
        ("until the first batch (workers coming up, first pages reaching them)", marks["first_stage"]),
        ("batches + hand-offs", first),
        ("closing the last tables (sweep, unique index)", last),
        ("validation", validate_start),
        ("noticing the end, stopping the workers", validate_end),
        ("producer exit", workers_gone or validate_end),
        ("", ended),
    ]
    phases = {name: max(after - at, 0.0) for (name, at), (_, after) in itertools.pairwise(points)}
    span = phases.pop("batches + hand-offs")
    order = list(phases.items())
    return {
        **dict(order[:6]),
        "batches": ran,
        "hand-offs between tables (no batch running)": span - ran,
        **dict(order[6:]),
    }


def workers_ready(logs: str, launched: float, worker_started: float | None) -> str:
    """When the local workers started and were all ready, from the command's launch: they
    come up while the run is prepared, so this overlaps the phases."""
    ready = max((_stamp(s) for s in READY_LINE.findall(logs)), default=None)
    if ready is None or worker_started is None:
        return "the workers' start is not in their logs"
    return (
        f"local workers started {worker_started - launched:.2f} s after the command and were "
        f"all ready {ready - launched:.2f} s after it (overlapping the phases above)"
    )


def _marks(cur: Any, run_id: str) -> dict[str, float]:
    """When the snapshots, the DDL, the triggers began; the last trigger's start stands for
    the end of the triggers (one trigger's time, ~15 ms, off)."""
    m = timeline.step_marks(cur, run_id)
    snapshots = m["snapshots"] or 0.0
    ddl = m["ddl"] or snapshots
    triggers = m["first_trigger"] or ddl
    planned = m["last_trigger"] or triggers
    return {"snapshots": snapshots, "ddl": ddl, "triggers": triggers,
            "planned": planned, "first_stage": m["first_stage"] or planned}


#: The tasks that sweep a stage: a backfill's own sweep task; a page's callback, a re-sent
#: page's or a reconciler pass for another stage.
CLOSERS = ("page_done", "stage_check", "reconcile", "stage_sweep")


def closing(cur: Any, run_id: str, logs: str) -> dict[str, dict[str, float | None]]:
    """Per table: waiting for the callback, its sweep, its unique index (seconds; None when
    the logs do not show which task closed it, or the table has no index)."""
    tasks = task_times(logs)
    spans = [span for name in CLOSERS for span in tasks.get(name, [])]
    result: dict[str, dict[str, float | None]] = {}
    for table, (batch_end, handed, built, stage_end) in timeline.closing_times(cur, run_id).items():
        swept = handed or stage_end
        closer = min((s for s, e in spans if swept is not None and s <= swept <= e + 0.01),
                     default=None)
        result[table] = {
            "waiting for the callback": None if closer is None else max(closer - batch_end, 0.0),
            "sweep": None if closer is None or swept is None else max(swept - closer, 0.0),
            "unique index": None if closer is None or built is None else max(built - closer, 0.0),
        }
    return result
