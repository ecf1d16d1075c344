"""Migrating while the application writes: its rows are given their UUIDs, mappings and
translations by the tool's triggers (also while workers are killed), a batch gives way to the
application's row locks, and rollback and a later run handle the triggers.

Each test plays the application with its own connections and judges the result with its own
SQL, never with the tool's checks alone.
"""

from __future__ import annotations

import io
import os
import random
import signal
import socket
import threading
import time

import pytest

from producer import commands, rollback_command, status_command, validate_command
from uuid_migrate import db
from uuid_migrate.ledger.states import RunStatus

from .helpers import CLINIC_TABLES, database_dump, rows, run_clinic, scalar
from .live_workload import Application, assert_in_step
from .recovery_support import (
    extra_attempts,
    pid_alive,
    pool_process_mid_batch,
    post_report,
    quick,
    slow_batches,
    wait_for_end,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_an_application_writing_through_a_whole_run_loses_nothing(clinic, settings):
    app = Application(settings.database_url).start()
    try:
        time.sleep(0.5)
        result = run_clinic(settings)
        during = dict(app.counts)
        report = validate_command.validate(settings)  # while it still writes
        time.sleep(1.0)
    finally:
        app.finish()

    assert app.errors == []
    assert result.status == RunStatus.SUCCEEDED, result.message
    assert report["overallStatus"] == "passed", [
        c for c in report["checks"] if c["status"] == "failed"
    ]
    assert during["insert"] > 50 and during["update"] > 20 and during["delete"] > 5, during
    assert_in_step(clinic)
    status = status_command.status(settings)
    assert sorted(status["triggers"]) == sorted(CLINIC_TABLES)  # they stay after the run
    assert validate_command.validate(settings)["overallStatus"] == "passed"


def test_an_application_writing_while_workers_are_killed_loses_nothing(
    clinic, settings, start_workers
):
    """The same, with SIGKILLs during the load: twice a pool process in the middle of a batch
    (its worker forks another), then a whole worker node in the middle of one, replaced by a
    new worker as a user would start it. The batches cut short come back by their missing
    heartbeat, with no `run` or `retry` needed."""
    for table in ("users", "dashboards"):  # a window to hit; the application is not slowed
        slow_batches(clinic, table, 0.25, batches_only=True)
    fast = quick(settings)
    app = Application(settings.database_url).start()
    try:
        time.sleep(0.5)
        queued = commands.run(fast, plan_file="clinic", out=io.StringIO(), allow_triggers=True)
        workers = start_workers(2, **fast.__dict__)
        mains = [p.pid for p in workers.processes]
        killed = [_kill_mid_batch(clinic, mains) for _ in range(2)]
        node = workers.processes[0]
        pool = wait_until(lambda: pool_process_mid_batch(clinic, [node.pid]), what="node 1 mid-batch")
        os.killpg(node.pid, signal.SIGKILL)  # main process and pool, no goodbye
        node.wait(timeout=30)
        start_workers(1, **fast.__dict__)
        assert wait_for_end(clinic, queued.run_id) == RunStatus.SUCCEEDED
        during = dict(app.counts)
        report = validate_command.validate(fast)  # while it still writes
        time.sleep(0.5)
    finally:
        app.finish()

    assert app.errors == []
    assert len(set(killed)) == 2
    # each batch cut short was run again: a kill may land just after its batch committed
    cut = cut_short(clinic, queued.run_id, [*killed, pool])
    assert cut and all(attempts >= 2 for attempts in cut.values()), cut
    assert extra_attempts(clinic, queued.run_id) >= len(cut)
    post = post_report(clinic, queued.run_id)
    assert post and post["overallStatus"] == "passed", post
    assert report["overallStatus"] == "passed", [
        c for c in report["checks"] if c["status"] == "failed"
    ]
    assert during["insert"] > 50 and during["update"] > 20 and during["delete"] > 5, during
    assert_in_step(clinic)


def cut_short(conn, run_id: str, pids: list[int]) -> dict[tuple[str, int], int]:
    """Batches a killed pool process started and did not finish, with their attempts by now
    (every batch of the run succeeded, so each was run again by another)."""
    found = rows(
        conn,
        "SELECT t.stage, t.batch_no, b.attempts FROM uuid_migration.transitions t "
        "JOIN uuid_migration.batches b USING (run_id, stage, batch_no) "
        "WHERE t.run_id = %s AND t.to_status = 'running' AND t.worker = ANY(%s) "
        "AND NOT EXISTS (SELECT FROM uuid_migration.transitions s WHERE s.run_id = t.run_id "
        "AND s.stage = t.stage AND s.batch_no = t.batch_no AND s.to_status = 'succeeded' "
        "AND s.worker = t.worker)",
        (run_id, [f"{socket.gethostname()}:{pid}" for pid in pids]),
    )
    return {(stage, batch_no): attempts for stage, batch_no, attempts in found}


def _kill_mid_batch(conn, mains: list[int]) -> int:
    """SIGKILL a pool process inside a batch statement; its pid once it is dead."""
    pid = wait_until(lambda: pool_process_mid_batch(conn, mains), what="a batch mid-statement")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 30, "the pool process to die")
    return pid


def test_a_batch_gives_way_to_an_application_holding_a_row(clinic, settings):
    """The application holds one dashboard (lock timeout 500 ms) until the batch over it has
    given way (split or tried again), and the application's other statements never wait
    behind a batch for long. Held until then, not for a fixed time: on a loaded machine the
    batch may reach the row late."""
    held = scalar(clinic, "SELECT max(id) FROM dashboards")
    others = [r[0] for r in rows(clinic, "SELECT id FROM dashboards WHERE id <> %s", (held,))]
    latencies: list[float] = []
    stop = threading.Event()
    errors: list[str] = []

    taken = threading.Event()

    def hold() -> None:
        conn = db.connect(settings.database_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM dashboards WHERE id = %s FOR UPDATE", (held,))
                taken.set()
                deadline = time.monotonic() + 60
                while not _gave_way(cur) and time.monotonic() < deadline:
                    time.sleep(0.1)
            conn.commit()
        except Exception as exc:  # the test reports it
            errors.append(repr(exc))
        finally:
            conn.close()

    def measure() -> None:
        conn = db.connect(settings.database_url, autocommit=True)
        rng = random.Random(7)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    started = time.monotonic()
                    cur.execute(
                        "UPDATE dashboards SET title = title || '' WHERE id = %s", (rng.choice(others),)
                    )
                    latencies.append(time.monotonic() - started)
        except Exception as exc:  # the test reports it
            errors.append(repr(exc))
        finally:
            conn.close()

    # Planned, its columns and triggers in place, and no worker yet: the row is held before
    # any batch can reach it; then workers resume the run.
    planned = commands.run(settings, plan_file="clinic", out=io.StringIO())
    assert planned.status == RunStatus.RUNNING
    threads = [threading.Thread(target=hold), threading.Thread(target=measure)]
    for thread in threads:
        thread.start()
    try:
        assert taken.wait(10)
        result = run_clinic(settings)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    assert errors == []
    assert result.status == RunStatus.SUCCEEDED, result.message
    with clinic.cursor() as cur:
        assert _gave_way(cur)
    assert len(latencies) > 100
    assert max(latencies) < 2.0, sorted(latencies)[-5:]
    assert_in_step(clinic)


def _gave_way(cur) -> bool:
    """A dashboards batch met the application's row lock and gave way."""
    cur.execute(
        "SELECT count(*) FROM uuid_migration.transitions WHERE stage = 'dashboards' "
        "AND error LIKE %s",
        ("%lock timeout%",),
    )
    return cur.fetchone()[0] >= 1


def test_rollback_after_a_run_removes_the_triggers_and_their_functions(clinic, settings):
    before = database_dump(clinic, settings.database_url)
    assert run_clinic(settings).status == RunStatus.SUCCEEDED
    assert scalar(clinic, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_uuid_migrate_%%'") == 8
    assert scalar(clinic, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'uuid_migrate_sync_%%'") == 4

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back" and outcome.report["overallStatus"] == "passed"
    assert scalar(clinic, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_uuid_migrate_%%'") == 0
    assert scalar(clinic, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'uuid_migrate_sync_%%'") == 0
    assert database_dump(clinic, settings.database_url) == before
    assert status_command.status(settings)["triggers"] == []


def test_run_again_after_a_gap_without_triggers_catches_up(clinic, settings):
    first = run_clinic(settings)
    assert first.status == RunStatus.SUCCEEDED
    with clinic.cursor() as cur:  # the application writes with the triggers away
        for table in ("users", "dashboards"):
            cur.execute(f"DROP TRIGGER zz_uuid_migrate_insert ON {table}")
            cur.execute(f"DROP TRIGGER zz_uuid_migrate_update ON {table}")
        cur.execute("INSERT INTO users (id, email) SELECT 'usr_gap' || i, 'gap' FROM generate_series(1, 30) i")
        cur.execute(
            "INSERT INTO dashboards (id, user_id, title) "
            "SELECT 'dsh_gap' || i, 'usr_gap' || (1 + i % 30), 'gap' FROM generate_series(1, 60) i"
        )
        cur.execute(
            "UPDATE dashboards SET user_id = 'usr_gap1' WHERE id IN "
            "(SELECT id FROM dashboards WHERE user_id IS NOT NULL AND id NOT LIKE 'dsh_gap%' "
            "ORDER BY id LIMIT 25)"
        )
    assert scalar(clinic, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 30
    assert validate_command.validate(settings)["overallStatus"] == "failed"

    again = run_clinic(settings)

    assert again.status == RunStatus.SUCCEEDED, again.message
    assert again.run_id != first.run_id
    assert_in_step(clinic)
    assert sorted(status_command.status(settings)["triggers"]) == sorted(CLINIC_TABLES)
    assert validate_command.validate(settings)["overallStatus"] == "passed"


def test_rollback_removes_the_mappings_the_triggers_added_to_an_id_mappings_of_the_application(
    clinic, settings
):
    with clinic.cursor() as cur:
        cur.execute(
            "CREATE TABLE id_mappings (table_name text NOT NULL, old_id text NOT NULL, "
            "new_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (table_name, old_id))"
        )
        cur.execute("INSERT INTO id_mappings (table_name, old_id, new_id) VALUES "
                    "('billing', 'inv-1', gen_random_uuid())")  # fmt: skip
    assert run_clinic(settings).status == RunStatus.SUCCEEDED
    with clinic.cursor() as cur:  # the application writes after the run, through the triggers
        cur.execute("INSERT INTO users (id, email) SELECT 'usr_late' || i, 'late' FROM generate_series(1, 20) i")
    assert scalar(clinic, "SELECT count(*) FROM id_mappings WHERE old_id LIKE 'usr_late%%'") == 20
    with clinic.cursor() as cur:  # what the database holds before the migration, but the rows
        cur.execute("CREATE TEMP TABLE late AS SELECT id, email, name, created_at FROM users "
                    "WHERE id LIKE 'usr_late%%'")  # fmt: skip

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back"
    assert rows(clinic, "SELECT table_name, old_id FROM id_mappings") == [("billing", "inv-1")]
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.added_mappings") == 0
