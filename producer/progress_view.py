"""The live progress display of `run --wait`: one line per stage, an overall line, a warning.

Pure: it takes plain data (`RunProgress`) and writes text. It never looks at PostgreSQL or
Redis, so whoever polls the ledger decides what the numbers are and this module only how they
look. A stage's rate is its rows over its own active time, so a table that waited for its
parents is not shown as slow, and a finished table keeps the rate it had.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

BAR_WIDTH = 12
NAME_WIDTH = 28
IDLE_WARNING_S = 15.0
NO_ETA = "--:--"
# A run in one of these states will not move on its own: an ETA would be a promise.
STOPPED = frozenset({"failed", "rolling_back", "rolled_back"})
CURSOR_UP = "\x1b[{n}F"  # to the start of the line n lines up
CLEAR_LINE = "\x1b[2K"
CLEAR_BELOW = "\x1b[J"  # a line drawn last time and not this time must not linger


@dataclass(frozen=True)
class StageProgress:
    stage: str  # e.g. "users" or "dashboards:references"
    status: str  # ledger stage status: pending, running, succeeded, failed
    done: int  # rows of succeeded batches
    total: int  # rows planned
    active_s: float  # from its first batch start to its last batch end (or now); 0 if not started
    failed_batches: int = 0
    retrying_batches: int = 0  # pending again after a failed attempt, or running with attempts>1


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    status: str  # planning, running, validating, succeeded, failed, rolling_back, rolled_back
    elapsed_s: float  # since the run started
    stages: tuple[StageProgress, ...]
    queue: str  # the broker queue name
    idle_s: float | None  # since a worker last took (claimed) a batch; None if none ever was
    work_waiting: bool  # batches sent but not yet taken
    throttled: str | None = None  # why workers wait between batches now, if they do


def clock_text(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def eta_text(remaining: int, rate: float) -> str:
    """Rounded up, so `0:00:00` never shows while a row remains."""
    if remaining <= 0:
        return "done"
    if rate <= 0:
        return NO_ETA
    return clock_text(max(1, math.ceil(remaining / rate)))


def stage_rate(stage: StageProgress) -> float:
    # active_s stops growing when the stage finishes, so the final rate stays put.
    return stage.done / stage.active_s if stage.active_s > 0 else 0.0


def stage_remaining(stage: StageProgress) -> int:
    # A succeeded stage is finished even if fewer rows existed than were planned.
    return 0 if stage.status == "succeeded" else max(0, stage.total - stage.done)


def overall_rate(stages: tuple[StageProgress, ...]) -> float:
    """Rows/s the workers manage now: stages running side by side add up.

    Between stages (nothing running has a rate yet), the pooled rate of the work so far.
    """
    running = sum(stage_rate(s) for s in stages if s.status == "running")
    if running > 0:
        return running
    active = sum(s.active_s for s in stages)
    return sum(s.done for s in stages) / active if active > 0 else 0.0


def bar(done: int, total: int) -> str:
    filled = BAR_WIDTH if total <= 0 else min(BAR_WIDTH, BAR_WIDTH * max(done, 0) // total)
    return "#" * filled + "-" * (BAR_WIDTH - filled)


def percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else min(100.0, 100.0 * done / total)


def batch_text(failed: int, retrying: int, always: bool = False) -> str:
    parts: list[str] = []
    if failed or always:
        parts.append(f"{failed} failed")
    if retrying or always:
        parts.append(f"{retrying} retrying")
    return ", ".join(parts)


def stage_line(stage: StageProgress, width: int) -> str:
    """`width` is the widest row count, so the columns line up without wasting the line."""
    rate = stage_rate(stage)
    eta = NO_ETA if stage.status == "failed" else eta_text(stage_remaining(stage), rate)
    batches = batch_text(stage.failed_batches, stage.retrying_batches)
    status = f"{stage.status} ({batches})" if batches else stage.status
    return (
        f"{stage.stage:<{NAME_WIDTH}.{NAME_WIDTH}} [{bar(stage.done, stage.total)}] "
        f"{percent(stage.done, stage.total):5.1f}% "
        f"{stage.done:>{width},}/{stage.total:<{width},} "
        f"{rate:>7,.0f} rows/s ETA {eta:>8} {status}"
    )


def overall_line(progress: RunProgress) -> str:
    stages = progress.stages
    done = sum(s.done for s in stages)
    total = sum(s.total for s in stages)
    remaining = sum(stage_remaining(s) for s in stages)
    if progress.status == "succeeded":
        eta = "done"
    elif progress.status in STOPPED and remaining:
        eta = NO_ETA
    else:
        eta = eta_text(remaining, overall_rate(stages))
    failed = sum(s.failed_batches for s in stages)
    retrying = sum(s.retrying_batches for s in stages)
    # `run` printed the run id when it started; repeating it would take a fifth of the line.
    return (
        f"run {progress.status}: {done:,}/{total:,} rows {percent(done, total):.1f}%, "
        f"elapsed {clock_text(progress.elapsed_s)}, ETA {eta}, "
        f"batches {batch_text(failed, retrying, always=True)}"
    )


def idle_warning(progress: RunProgress) -> str | None:
    """Says so when batches wait and nobody takes them: most often no worker is running."""
    idle = progress.idle_s
    if progress.status != "running" or not progress.work_waiting or idle is None:
        return None
    if idle < IDLE_WARNING_S:
        return None
    queue = progress.queue
    return (
        f"no worker has taken a batch for {int(idle)} s: start workers on queue '{queue}' "
        f"(celery -A worker worker --queues {shlex.quote(queue)})"
    )


def render(progress: RunProgress) -> list[str]:
    width = max((len(f"{n:,}") for s in progress.stages for n in (s.done, s.total)), default=1)
    lines = [stage_line(s, width) for s in progress.stages]
    lines.append(overall_line(progress))
    warning = idle_warning(progress)
    if warning:
        lines.append(warning)
    if progress.throttled and progress.status == "running":
        lines.append(f"throttled: {progress.throttled}")
    return lines


class ProgressView:
    """Redraws in place on a terminal; otherwise prints every `interval_s`, and the end once."""

    def __init__(
        self,
        out: TextIO,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval_s = interval_s
        self.clock = clock
        self.drawn = 0  # lines on screen from the last redraw, to move back over
        self.last_print: float | None = None
        self.finished = False

    def show(self, progress: RunProgress, final: bool = False) -> None:
        if self.finished:
            return  # the final state is already out; repeating it would only add noise
        lines = render(progress)
        if self.tty:
            self._redraw(lines)
        elif final or self._due():
            self.out.write("".join(f"{text}\n" for text in lines))
            self.last_print = self.clock()
        self.finished = final
        self.out.flush()

    def _due(self) -> bool:
        return self.last_print is None or self.clock() - self.last_print >= self.interval_s

    def _redraw(self, lines: list[str]) -> None:
        if self.drawn:
            self.out.write(CURSOR_UP.format(n=self.drawn))
        self.out.write("".join(f"{CLEAR_LINE}{text}\n" for text in lines))
        self.out.write(CLEAR_BELOW)
        self.drawn = len(lines)
