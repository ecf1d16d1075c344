"""Worker and producer logs: one structured line per batch, JSON on request, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace

import pytest

from config.logs import FIELDS, configure_logging
from config.settings import load_settings
from devtools import sample
from producer import commands
from uuid_migrate.errors import ConfigError
from uuid_migrate.ledger.states import RunStatus

from .helpers import rows
from .watch import secret_password, with_password

BATCH_FIELDS = {"run", "table", "batch", "range", "rows", "duration_ms", "attempt"}


@pytest.mark.e2e
def test_json_worker_logs_have_one_line_per_batch_and_no_password(
    conn, settings, start_workers, tmp_path
):
    with conn.cursor() as cur:
        sample.build(cur, sample.SampleSize.for_users(300))
    password = secret_password()
    secret = replace(
        settings,
        database_url=with_password(settings.database_url, password),
        log_format="json",
    )
    start_workers(2, database_url=secret.database_url, log_format="json")

    result = commands.run(secret, plan_file="clinic", out=io.StringIO(), wait=True)

    assert result.status == RunStatus.SUCCEEDED
    logs = [path.read_text() for path in sorted(tmp_path.glob("worker-*.log"))]
    assert len(logs) == 2
    lines = [line for text in logs for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON, banner included
    batch_lines = [r for r in records if r.get("event") == "batch"]
    ledger_rows = rows(
        conn, "SELECT stage, batch_no, rows, attempts FROM uuid_migration.batches ORDER BY 1, 2"
    )
    logged = sorted((r["stage"], r["batch"], r["rows"], r["attempt"]) for r in batch_lines)
    assert logged == sorted(ledger_rows), "one line per batch, agreeing with the ledger"
    for record in batch_lines:
        assert set(record) >= BATCH_FIELDS and record["run"] == result.run_id
        assert record["table"] == record["stage"].split(":")[0] and record["status"] == "succeeded"
        assert record["range"].startswith("(") and record["level"] == "INFO"
    assert all(password not in text for text in logs)


@pytest.fixture
def root_logger():
    """configure_logging replaces the root handlers; pytest's own are put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_mask_covers_messages_arguments_fields_and_tracebacks(root_logger):
    stream = io.StringIO()
    configure_logging(load_settings({"LOG_FORMAT": "json"}), stream=stream)
    log = logging.getLogger("uuid_migrate.test")
    url = "postgresql://app:hunter2@db:5432/app"
    try:
        raise RuntimeError(f"cannot reach {url}")
    except RuntimeError:
        log.exception("failed for %s", url, extra={FIELDS: {"dsn": url}})
    record = json.loads(stream.getvalue())
    assert "hunter2" not in stream.getvalue()
    assert record["message"] == "failed for postgresql://app:***@db:5432/app"
    assert record["dsn"] == "postgresql://app:***@db:5432/app"
    assert "RuntimeError: cannot reach postgresql://app:***@db" in record["exception"]


def test_text_logs_are_masked_too_and_a_library_handler_gets_the_filter(root_logger):
    stream, library_stream = io.StringIO(), io.StringIO()
    library = logging.getLogger("some.library")
    library.propagate = False
    library.addHandler(logging.StreamHandler(library_stream))
    try:
        configure_logging(load_settings({}), stream=stream)
        logging.getLogger("x").warning("broker amqp://guest:guest@rabbit:5672//")
        library.warning("redis://:hunter2@cache:6379/0")
    finally:
        library.handlers.clear()
        library.propagate = True
    assert "WARNING" in stream.getvalue() and "amqp://guest:***@rabbit:5672//" in stream.getvalue()
    assert library_stream.getvalue().strip() == "redis://:***@cache:6379/0"


def test_an_unknown_log_format_is_a_clear_setting_error():
    with pytest.raises(ConfigError, match="LOG_FORMAT must be one of text, json"):
        load_settings({"LOG_FORMAT": "xml"})
    assert load_settings({"LOG_FORMAT": "JSON"}).log_format == "json"
