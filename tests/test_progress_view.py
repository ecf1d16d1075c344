"""The progress display of `run --wait`: pure text from plain data, no services needed."""

from __future__ import annotations

import io
import re
from dataclasses import replace

from producer.progress_view import (
    ProgressView,
    RunProgress,
    StageProgress,
    eta_text,
    render,
)

CURSOR_UP = re.compile(r"\x1b\[(\d+)F")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stage(name: str = "users", **kw: object) -> StageProgress:
    fields: dict[str, object] = {
        "stage": name,
        "status": "running",
        "done": 0,
        "total": 10_000,
        "active_s": 0.0,
    }
    fields.update(kw)
    return StageProgress(**fields)  # type: ignore[arg-type]


def run(*stages: StageProgress, **kw: object) -> RunProgress:
    fields: dict[str, object] = {
        "run_id": "run-20240501-120000-abc123",
        "status": "running",
        "elapsed_s": 100.0,
        "stages": stages or (stage(),),
        "queue": "uuid_migrate",
        "idle_s": 1.0,
        "work_waiting": True,
    }
    fields.update(kw)
    return RunProgress(**fields)  # type: ignore[arg-type]


def stage_text(progress: RunProgress, name: str) -> str:
    return next(line for line in render(progress) if line.startswith(name))


def overall_text(progress: RunProgress) -> str:
    return render(progress)[len(progress.stages)]  # after the stage lines


def test_a_stage_rate_is_its_rows_over_its_own_active_time_not_the_run_time():
    waited = stage("orders", status="succeeded", done=10_000, total=10_000, active_s=10.0)
    text = stage_text(run(waited, elapsed_s=110.0), "orders")
    assert "1,000 rows/s" in text
    assert "100.0%" in text and "10,000/10,000" in text and "succeeded" in text


def test_a_finished_stage_keeps_its_rate_while_the_run_goes_on():
    finished = stage("users", status="succeeded", done=50_000, total=50_000, active_s=20.0)
    later = stage("orders", done=100, total=90_000, active_s=1.0)
    first = stage_text(run(finished, later, elapsed_s=30.0), "users")
    second = stage_text(run(finished, replace(later, done=9_000), elapsed_s=300.0), "users")
    assert "2,500 rows/s" in first
    assert first == second


def test_a_stage_not_started_has_no_rate_and_no_eta_and_does_not_divide_by_zero():
    text = stage_text(run(stage("users", status="pending", active_s=0.0)), "users")
    assert " 0 rows/s" in text
    assert "ETA    --:--" in text


def test_the_eta_rounds_up_so_it_never_reads_zero_while_work_remains():
    assert eta_text(3, 10.0) == "0:00:01"  # 0.3 s left
    assert eta_text(1, 1_000_000.0) == "0:00:01"
    assert eta_text(30_001, 500.0) == "0:01:01"
    assert eta_text(30_000, 500.0) == "0:01:00"
    assert eta_text(10, 0.0) == "--:--"
    assert eta_text(0, 0.0) == "done"
    nearly = stage("users", done=9_997, total=10_000, active_s=1.0)
    assert "0:00:00" not in "\n".join(render(run(nearly)))


def test_a_succeeded_stage_is_done_even_with_fewer_rows_than_planned():
    text = stage_text(run(stage(status="succeeded", done=9_990, active_s=9.99)), "users")
    assert "ETA     done" in text


def test_stage_lines_show_bar_retrying_batches_and_cut_long_names():
    name = "a_table_name_that_is_far_too_long_to_show"
    text = stage_text(run(stage(name, done=5_000, active_s=5.0, retrying_batches=2)), name[:28])
    assert text.startswith(name[:28] + " [")
    assert name[:29] not in text
    assert "[######------]" in text
    assert " 50.0% " in text and "ETA  0:00:05" in text
    assert text.endswith("running (2 retrying)")


def test_the_overall_line_sums_rows_elapsed_eta_and_batches():
    progress = run(
        stage("users", status="succeeded", done=40_000, total=40_000, active_s=40.0),
        stage("orders", done=30_000, total=60_000, active_s=30.0, retrying_batches=1),
        stage("orders:references", status="pending", total=0),
        stage("items", status="failed", done=100, total=1_000, active_s=5.0, failed_batches=2),
        elapsed_s=3_725.0,
    )
    text = overall_text(progress)
    assert text.startswith("run running: 70,100/101,000 rows 69.4%")
    assert "elapsed 1:02:05" in text
    # 30,900 rows remain at the running stage's 1,000 rows/s
    assert "ETA 0:00:31" in text
    assert text.endswith("batches 2 failed, 1 retrying")


def test_stages_running_side_by_side_add_up_for_the_overall_eta():
    progress = run(
        stage("users", done=5_000, total=10_000, active_s=5.0),
        stage("orders", done=5_000, total=10_000, active_s=5.0),
    )
    assert "ETA 0:00:05" in overall_text(progress)


def test_the_overall_eta_is_done_at_the_end_and_absent_when_the_run_stopped():
    finished = stage(status="succeeded", done=10_000, active_s=10.0)
    assert "ETA done" in overall_text(run(finished, status="succeeded"))
    halted = stage(status="failed", done=10, active_s=10.0, failed_batches=1)
    assert "ETA --:--" in overall_text(run(halted, status="failed"))


def test_lines_stay_within_120_characters():
    progress = run(
        stage("x" * 40, done=3_400_000, total=3_400_000, status="succeeded", active_s=99.0),
        stage("y" * 40, done=1_200_000, total=3_400_000, active_s=99.0, retrying_batches=3),
        status="rolling_back",
        elapsed_s=99_999.0,
    )
    assert max(len(line) for line in render(progress)) <= 120
    assert overall_text(progress).startswith("run rolling_back: 4,600,000/6,800,000 rows")
    # the warning's length grows with the queue name; with the default one it is about 120
    assert len(render(run(idle_s=99.0, queue="uuid_migrate"))[-1]) <= 125


def test_the_idle_warning_names_the_queue_after_15_seconds():
    text = "\n".join(render(run(idle_s=23.4, queue="bulk")))
    assert (
        "no worker has taken a batch for 23 s: start workers on queue 'bulk' "
        "(celery -A worker worker --queues bulk)"
    ) in text


def test_no_idle_warning_before_15_seconds_without_waiting_work_or_outside_running():
    for progress in (
        run(idle_s=14.9),
        run(idle_s=None),
        run(idle_s=60.0, work_waiting=False),
        run(idle_s=60.0, status="validating"),
        run(idle_s=60.0, status="planning"),
    ):
        assert "no worker" not in "\n".join(render(progress))
    assert "no worker" in "\n".join(render(run(idle_s=15.0)))


def test_without_a_terminal_it_prints_every_interval_and_the_end_exactly_once():
    out, clock = io.StringIO(), Clock()
    view = ProgressView(out, interval_s=5.0, clock=clock)
    progress = run(stage("users"), stage("orders"))
    lines_per_print = len(render(progress))
    assert lines_per_print == 3  # one per stage and the overall line

    view.show(progress)
    assert out.getvalue().count("\n") == lines_per_print
    clock.now += 4.9
    view.show(progress)
    assert out.getvalue().count("\n") == lines_per_print
    clock.now += 0.1
    view.show(progress)
    assert out.getvalue().count("\n") == 2 * lines_per_print
    clock.now += 1.0
    view.show(progress, final=True)
    assert out.getvalue().count("\n") == 3 * lines_per_print
    clock.now += 60.0
    view.show(progress, final=True)
    view.show(progress)
    assert out.getvalue().count("\n") == 3 * lines_per_print
    assert "\x1b" not in out.getvalue()


def test_on_a_terminal_it_redraws_over_the_lines_it_drew_before():
    out = Tty()
    view = ProgressView(out, clock=Clock())
    view.show(run(stage("users"), stage("orders")))
    first = out.getvalue()
    assert not CURSOR_UP.search(first)
    assert first.count("\x1b[2K") == 3

    view.show(run(stage("users"), stage("orders"), idle_s=20.0))  # every call redraws
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[3F")
    assert second.count("\x1b[2K") == 4  # the idle warning adds a line

    view.show(run(stage("users"), stage("orders")), final=True)
    third = out.getvalue()[len(first) + len(second) :]
    assert third.startswith("\x1b[4F")
    assert third.endswith("\x1b[J")  # the warning line no longer drawn is cleared
    view.show(run(stage("users"), stage("orders")), final=True)
    assert out.getvalue() == first + second + third
