"""Pure logic of recovery: backoff arithmetic, error classes, the breaker rule, settings."""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest

from config.settings import load_settings
from uuid_migrate import retrying
from uuid_migrate.errors import ConfigError, ConnectionFailed
from uuid_migrate.recovery.breaker import breaker_trips
from uuid_migrate.retrying import RetryPolicy, classify, compute_backoff


def test_backoff_doubles_from_the_base_and_stops_at_the_cap():
    top = [compute_backoff(n, 500, 30_000, rand=lambda: 1.0) for n in range(1, 9)]
    assert top == [500, 1000, 2000, 4000, 8000, 16000, 30_000, 30_000]


def test_backoff_is_full_jitter_between_zero_and_the_ceiling():
    assert compute_backoff(3, 500, 30_000, rand=lambda: 0.0) == 0
    assert compute_backoff(3, 500, 30_000, rand=lambda: 0.25) == 500
    draws = [compute_backoff(4, 100, 10_000) for _ in range(200)]
    assert all(0 <= d <= 800 for d in draws) and len(set(draws)) > 1


def test_backoff_of_no_attempt_or_no_base_is_nothing_and_huge_attempts_do_not_overflow():
    assert compute_backoff(0, 500, 1000) == 0
    assert compute_backoff(3, 0, 1000) == 0
    assert compute_backoff(10_000, 500, 1000, rand=lambda: 1.0) == 1000
    assert RetryPolicy(backoff_ms=1000, backoff_max_ms=1000).delay_s(5) <= 1.0


@pytest.mark.parametrize(
    "error",
    [psycopg2.errors.QueryCanceled(), psycopg2.errors.LockNotAvailable()],
)
def test_statement_and_lock_timeouts_split_the_batch(error):
    assert classify(error) == retrying.SPLIT


@pytest.mark.parametrize(
    "error",
    [
        psycopg2.errors.SerializationFailure(),
        psycopg2.errors.DeadlockDetected(),
        psycopg2.errors.AdminShutdown(),
        psycopg2.OperationalError("server closed the connection unexpectedly"),
        psycopg2.InterfaceError("connection already closed"),
        ConnectionFailed("cannot connect to PostgreSQL"),
    ],
)
def test_lost_connections_and_conflicts_are_transient(error):
    assert classify(error) == retrying.TRANSIENT


@pytest.mark.parametrize(
    "error",
    [
        psycopg2.errors.RaiseException(),
        psycopg2.errors.UniqueViolation(),  # on no index of ours: not a UUID collision
        psycopg2.errors.NotNullViolation(),
        ValueError("not a database error"),
    ],
)
def test_anything_else_fails_the_batch_at_once(error):
    assert classify(error) == retrying.PERMANENT


def test_the_breaker_needs_fifty_finished_batches_and_more_than_half_failed():
    assert breaker_trips(50, 26)
    assert not breaker_trips(50, 25)
    assert not breaker_trips(49, 49)
    assert breaker_trips(1000, 501) and not breaker_trips(1000, 500)


def test_recovery_settings_come_from_the_environment_with_defaults():
    defaults = load_settings({})
    assert (defaults.batch_max_attempts, defaults.heartbeat_timeout_s) == (5, 60)
    assert defaults.min_split_rows == 10 and defaults.reconcile_interval_s == 30
    custom = load_settings(
        {"BATCH_MAX_ATTEMPTS": "3", "HEARTBEAT_TIMEOUT_S": "9", "RETRY_BACKOFF_MS": "0"}
    )
    assert (custom.batch_max_attempts, custom.heartbeat_timeout_s) == (3, 9)
    assert custom.retry_backoff_ms == 0
    with pytest.raises(ConfigError, match="BATCH_MAX_ATTEMPTS must be at least 1"):
        load_settings({"BATCH_MAX_ATTEMPTS": "0"})
    with pytest.raises(ConfigError, match="HEARTBEAT_TIMEOUT_S must be a whole number"):
        load_settings({"HEARTBEAT_TIMEOUT_S": "soon"})


def test_an_error_line_carries_its_sqlstate_when_postgres_gave_one(conn):
    with pytest.raises(psycopg2.errors.DivisionByZero) as raised, conn.cursor() as cur:
        cur.execute("SELECT 1 / 0")
    assert retrying.one_line(raised.value) == "division by zero [22012]"
    assert retrying.one_line(ValueError("bad\nmore")) == "bad"
    assert retrying.one_line(RuntimeError()) == "RuntimeError"


def test_a_collision_on_a_shortened_uuid_index_name_is_retried_with_fresh_uuids():
    from uuid_migrate.schema.steps import index_name

    name = index_name("t" * 60, "uuid_id")
    assert not name.endswith("_uuid_id_key")  # shortened with a hash: the suffix is gone

    class Collision(psycopg2.errors.UniqueViolation):
        class diag:  # the shape of psycopg2's Diagnostics
            constraint_name = name

    assert classify(Collision(), name) == retrying.DUPLICATE_UUID
    assert classify(Collision()) == retrying.PERMANENT


def test_a_collision_on_a_partition_s_uuid_index_is_retried_with_fresh_uuids():
    from uuid_migrate.schema.partitioned import partition_index_name

    name = partition_index_name("public", "a_partition_whose_name_is_long_" * 3, "uuid_id")

    class Collision(psycopg2.errors.UniqueViolation):
        class diag:
            constraint_name = name

    assert classify(Collision(), "parent_uuid_id_key") == retrying.DUPLICATE_UUID
