"""Limits said before any work: the local worker cap, the batch size, and local workers that
cannot be started (which stop those already started, leaving the run to resume), or that were
started before the run was refused."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import psutil
import pytest

from config.settings import load_settings
from producer.cli import build_parser
from uuid_migrate import db
from uuid_migrate.errors import ConfigError, PlanError
from uuid_migrate.ledger import runs
from uuid_migrate.plan import plan_file
from uuid_migrate.plan.model import MAX_BATCH_SIZE, Plan, Table, validate

from .helpers import scalar
from .recovery_support import (
    ORIGINAL_COLUMNS,
    assert_intact,
    build_clinic,
    cli,
    start_producer,
)


def _one_line_usage_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr


def _ledger_exists(conn) -> bool:
    return scalar(conn, "SELECT to_regnamespace('uuid_migration') IS NOT NULL")


def test_the_worker_cap_defaults_to_four_per_cpu_and_is_a_setting():
    assert load_settings({}).max_local_workers == 4 * (os.cpu_count() or 1)
    assert load_settings({"MAX_LOCAL_WORKERS": "3"}).max_local_workers == 3
    with pytest.raises(ConfigError, match="MAX_LOCAL_WORKERS"):
        load_settings({"MAX_LOCAL_WORKERS": "0"})


@pytest.mark.parametrize("command", ["run", "retry", "demo"])
def test_workers_above_the_cap_are_a_one_line_usage_error_before_anything_is_done(
    conn, settings, command
):
    capped = replace(settings, max_local_workers=3)
    result = cli(capped, command, "--workers", "4")
    _one_line_usage_error(result, "--workers 4 is above the limit of 3", "MAX_LOCAL_WORKERS")
    assert not _ledger_exists(conn)


def test_batch_sizes_beyond_the_maximum_are_usage_and_plan_errors(clinic, settings, tmp_path):
    args = build_parser().parse_args(["run", "--batch-size", str(MAX_BATCH_SIZE)])
    assert args.batch_size == MAX_BATCH_SIZE

    flag = cli(settings, "run", "--batch-size", str(MAX_BATCH_SIZE + 1))
    assert flag.returncode == 2 and "--batch-size: must be at most 1,000,000" in flag.stderr
    env = cli(replace(settings, batch_size=5_000_000), "run")
    _one_line_usage_error(env, "BATCH_SIZE must be at most 1,000,000, got 5,000,000")
    plan = tmp_path / "plan.toml"
    for text in ("batch_size = 2000000\n", ""):
        table = "" if text else "batch_size = 2000000\n"
        plan.write_text(f'{text}[[tables]]\nname = "users"\n{table}')
        refused = cli(settings, "run", "--plan", str(plan))
        _one_line_usage_error(refused, "batch_size must be 1 to 1,000,000, got 2000000")
    assert not _ledger_exists(clinic)


def test_a_plans_batch_sizes_are_checked_at_every_level():
    with pytest.raises(PlanError, match="the plan: batch_size"):
        validate(Plan("public", (Table("a", "id"),), (), MAX_BATCH_SIZE + 1))
    with pytest.raises(PlanError, match="table 'a': batch_size"):
        validate(Plan("public", (Table("a", "id", batch_size=0),), ()))
    with pytest.raises(PlanError, match="malformed"):
        plan_file.load_text('batch_size = "big"\n[[tables]]\nname = "a"\n')
    assert validate(Plan("public", (Table("a", "id"),), (), MAX_BATCH_SIZE)).batch_size


def _workers_of(producer_pid: int) -> list[psutil.Process]:
    """Live worker processes started by that producer, found by their node name."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if f"-{producer_pid}@" in cmdline and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.mark.e2e
def test_a_worker_that_cannot_start_stops_the_others_before_any_change(
    conn, settings, tmp_path
):
    """Local workers start while the run is prepared: one that cannot start ends the command
    before the run (or its ledger) exists, and a later `run` starts it afresh."""
    before = build_clinic(conn)
    logs = tmp_path / "logs"
    (logs / "worker-2.log").mkdir(parents=True)  # worker 2's log cannot be opened
    producer = start_producer(
        settings, "run", "--plan", "clinic", "--workers", "2", "--worker-logs", str(logs)
    )
    out, err = producer.communicate(timeout=120)

    assert producer.returncode == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "cannot start local worker 2 of 2: Is a directory" in err
    assert (logs / "worker-1.log").is_file(), "worker 1 had been started"
    assert _workers_of(producer.pid) == [], "worker 1 was stopped"
    assert scalar(conn, "SELECT to_regclass('uuid_migration.runs') IS NULL"), "no run was made"
    assert scalar(conn, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'uuid_id'") == 0

    resumed = cli(settings, "run", "--workers", "2", "--wait", "--worker-logs", str(tmp_path / "ok"))
    assert resumed.returncode == 0, (resumed.stdout[-2000:], resumed.stderr[-2000:])
    assert "starting run" in resumed.stdout
    for table in ORIGINAL_COLUMNS:
        assert scalar(conn, f"SELECT count(*) FROM {table} WHERE uuid_id IS NULL") == 0
    assert_intact(conn, before, scalar(conn, "SELECT run_id FROM uuid_migration.runs"))


def test_worker_logs_that_cannot_be_a_folder_are_one_line(clinic, settings, tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("")
    result = cli(settings, "run", "--plan", "clinic", "--workers", "1", "--worker-logs", str(taken))
    _one_line_usage_error(result, f"cannot create --worker-logs {taken}: File exists")


def test_the_entry_point_starts_workers_before_it_loads_celery():
    """`uuid-migrate` parses its command line and starts `run`'s workers with none of Celery,
    kombu, Redis or the commands loaded: the workers come up while those load."""
    probe = (
        "import sys, producer.cli; "
        "print([m for m in ('celery', 'kombu', 'redis', 'producer.commands') if m in sys.modules])"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


@pytest.mark.e2e
def test_workers_started_early_are_stopped_when_the_run_is_then_refused(clinic, settings, tmp_path):
    """A rollback holds the database: the run is refused after its workers started, which
    are stopped; no ledger is made."""
    logs = tmp_path / "logs"
    with db.connection(settings.require_database(), autocommit=True) as held:
        with held.cursor() as cur:
            assert runs.try_detached_lock(cur)
        producer = start_producer(
            settings, "run", "--plan", "clinic", "--workers", "2", "--worker-logs", str(logs)
        )
        out, err = producer.communicate(timeout=120)

    assert producer.returncode == 2, (out, err)
    assert err.count("\n") == 1 and "a rollback of this database is in progress" in err, err
    assert sorted(p.name for p in logs.iterdir()) == ["worker-1.log", "worker-2.log"]
    assert _workers_of(producer.pid) == [], "both were stopped"
    assert not _ledger_exists(clinic)
