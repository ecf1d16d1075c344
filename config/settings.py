"""The only module that reads the environment. Everything else receives a Settings object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from uuid_migrate.errors import ConfigError
from uuid_migrate.plan import batch_sizes
from uuid_migrate.plan.model import MAX_BATCH_SIZE

#: Rows per batch when neither the plan, a flag nor BATCH_SIZE says otherwise: each table's
#: own (uuid_migrate/plan/batch_sizes.py; measured in BENCHMARKS.md), so `batch_size` is None.
#: A batch of the default size expected to run longer than this is cut in half before it runs
#: (0: never), so that it holds its row locks about this long at most (README, Batch size).
DEFAULT_BATCH_TARGET_MS = 1000
#: Broker queue of our tasks, so the tool can share a broker with an application's own workers.
DEFAULT_QUEUE = "uuid_migrate"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: DDL waits at most this long for its lock, so it never queues behind a long transaction.
DEFAULT_LOCK_TIMEOUT_MS = 500
#: A batch waits at most this long for a row lock the application holds (then it is split
#: or tried again later), so the application never waits long behind a batch.
DEFAULT_BATCH_LOCK_TIMEOUT_MS = 500
#: A batch statement running longer than this is cancelled (0: no limit).
DEFAULT_STATEMENT_TIMEOUT_MS = 0
#: Batches sent per chord; bounds producer memory and queue length for any table size.
DEFAULT_DISPATCH_PAGE = 500
#: Log formats: `text` for people, `json` (one object a line) for log collectors.
LOG_FORMATS = ("text", "json")
#: Tries of one batch against transient errors before it is marked failed.
DEFAULT_BATCH_MAX_ATTEMPTS = 5
#: First retry waits up to this long; each further one doubles it (full jitter), up to the cap.
DEFAULT_RETRY_BACKOFF_MS = 500
DEFAULT_RETRY_BACKOFF_MAX_MS = 30_000
#: A running batch without a heartbeat for this long is stale (its worker is gone).
DEFAULT_HEARTBEAT_TIMEOUT_S = 60
#: A batch that times out is split in half while it holds more rows than this.
DEFAULT_MIN_SPLIT_ROWS = 10
#: Seconds between reconciler passes while a run is active.
DEFAULT_RECONCILE_INTERVAL_S = 30
#: `--workers` above this many per CPU is refused: beyond the cores they only queue in
#: PostgreSQL (README, Scale workers), and a typo such as 400 would fork a process storm.
LOCAL_WORKERS_PER_CPU = 4
#: Health thresholds of the throttle (README, Migrating while the application writes); 0: off.
DEFAULT_THROTTLE_REPLICATION_LAG_S = 1.5
DEFAULT_THROTTLE_OLDEST_TRANSACTION_S = 300.0
DEFAULT_THROTTLE_WAL_MB_PER_S = 0.0
#: While this many sessions other than the tool's ran a statement within the last second (the
#: application is active), each worker rests THROTTLE_APPLICATION_REST times its last batch's
#: duration between batches (README, Throttle; measured in BENCHMARKS.md's online case).
DEFAULT_THROTTLE_APPLICATION_SESSIONS = 1
DEFAULT_THROTTLE_APPLICATION_REST = 0.5
#: Local workers asked to stop get this long to finish their current batch (warm) before they
#: are killed with their pool processes (README, Scale workers).
DEFAULT_WORKER_STOP_GRACE_S = 20
#: Set by `--workers` in each local worker's environment: the producer it must not outlive.
PRODUCER_PID_VARIABLE = "UUID_MIGRATE_PRODUCER_PID"


#: Each environment variable and the Settings field it sets: the one mapping both ways.
ENVIRONMENT = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "BROKER_URL": "broker_url",
    "BATCH_SIZE": "batch_size",
    "BATCH_TARGET_MS": "batch_target_ms",
    "UUID_MIGRATE_QUEUE": "queue",
    "LOCK_TIMEOUT_MS": "lock_timeout_ms",
    "BATCH_LOCK_TIMEOUT_MS": "batch_lock_timeout_ms",
    "STATEMENT_TIMEOUT_MS": "statement_timeout_ms",
    "DISPATCH_PAGE": "dispatch_page",
    "LOG_FORMAT": "log_format",
    "FLOWER_BASIC_AUTH": "flower_basic_auth",
    "BATCH_MAX_ATTEMPTS": "batch_max_attempts",
    "RETRY_BACKOFF_MS": "retry_backoff_ms",
    "RETRY_BACKOFF_MAX_MS": "retry_backoff_max_ms",
    "HEARTBEAT_TIMEOUT_S": "heartbeat_timeout_s",
    "MIN_SPLIT_ROWS": "min_split_rows",
    "RECONCILE_INTERVAL_S": "reconcile_interval_s",
    "MAX_LOCAL_WORKERS": "max_local_workers",
    "WORKER_STOP_GRACE_S": "worker_stop_grace_s",
    "THROTTLE_REPLICATION_LAG_S": "throttle_replication_lag_s",
    "THROTTLE_OLDEST_TRANSACTION_S": "throttle_oldest_transaction_s",
    "THROTTLE_WAL_MB_PER_S": "throttle_wal_mb_per_s",
    "THROTTLE_APPLICATION_SESSIONS": "throttle_application_sessions",
    "THROTTLE_APPLICATION_REST": "throttle_application_rest",
}


def default_max_local_workers() -> int:
    return LOCAL_WORKERS_PER_CPU * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """Everything the tool needs to know about its surroundings."""

    # URLs carry passwords: kept out of repr, so a logged Settings never shows one.
    database_url: str | None = field(repr=False)
    redis_url: str = field(repr=False)
    broker_url: str = field(repr=False)
    #: Rows per batch as the user gave them; None: the default, sized per table.
    batch_size: int | None = None
    batch_target_ms: int = DEFAULT_BATCH_TARGET_MS
    queue: str = DEFAULT_QUEUE
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    batch_lock_timeout_ms: int = DEFAULT_BATCH_LOCK_TIMEOUT_MS
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    dispatch_page: int = DEFAULT_DISPATCH_PAGE
    log_format: str = "text"
    #: `user:password` for Flower's basic auth; None leaves Flower's API closed.
    flower_basic_auth: str | None = field(default=None, repr=False)
    batch_max_attempts: int = DEFAULT_BATCH_MAX_ATTEMPTS
    retry_backoff_ms: int = DEFAULT_RETRY_BACKOFF_MS
    retry_backoff_max_ms: int = DEFAULT_RETRY_BACKOFF_MAX_MS
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S
    min_split_rows: int = DEFAULT_MIN_SPLIT_ROWS
    reconcile_interval_s: int = DEFAULT_RECONCILE_INTERVAL_S
    max_local_workers: int = field(default_factory=default_max_local_workers)
    worker_stop_grace_s: int = DEFAULT_WORKER_STOP_GRACE_S
    throttle_replication_lag_s: float = DEFAULT_THROTTLE_REPLICATION_LAG_S
    throttle_oldest_transaction_s: float = DEFAULT_THROTTLE_OLDEST_TRANSACTION_S
    throttle_wal_mb_per_s: float = DEFAULT_THROTTLE_WAL_MB_PER_S
    throttle_application_sessions: int = DEFAULT_THROTTLE_APPLICATION_SESSIONS
    throttle_application_rest: float = DEFAULT_THROTTLE_APPLICATION_REST

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set: point it at the database to migrate")
        return self.database_url

    def with_overrides(self, **values: Any) -> Settings:
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def to_environment(self) -> dict[str, str]:
        """The settings as the variables `load_settings` reads, so that a process started with
        them (a local worker) gets exactly these settings: `load_settings(s.to_environment())
        == s`. Unset optional values are left out."""
        env = {name: str(getattr(self, attr)) for name, attr in ENVIRONMENT.items()}
        return {name: value for name, value in env.items() if value != "None"}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (or the mapping given), validated."""
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        redis_url=redis_url,
        broker_url=env.get("BROKER_URL") or redis_url,
        batch_size=_batch_size(env),
        batch_target_ms=_int(env, "BATCH_TARGET_MS", DEFAULT_BATCH_TARGET_MS),
        queue=env.get("UUID_MIGRATE_QUEUE") or DEFAULT_QUEUE,
        lock_timeout_ms=_positive_int(env, "LOCK_TIMEOUT_MS", DEFAULT_LOCK_TIMEOUT_MS),
        batch_lock_timeout_ms=_positive_int(
            env, "BATCH_LOCK_TIMEOUT_MS", DEFAULT_BATCH_LOCK_TIMEOUT_MS
        ),
        statement_timeout_ms=_int(env, "STATEMENT_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS),
        dispatch_page=_positive_int(env, "DISPATCH_PAGE", DEFAULT_DISPATCH_PAGE),
        log_format=_choice(env, "LOG_FORMAT", LOG_FORMATS),
        flower_basic_auth=_basic_auth(env.get("FLOWER_BASIC_AUTH") or None),
        max_local_workers=_positive_int(env, "MAX_LOCAL_WORKERS", default_max_local_workers()),
        worker_stop_grace_s=_positive_int(env, "WORKER_STOP_GRACE_S", DEFAULT_WORKER_STOP_GRACE_S),
        **_recovery_settings(env),
        **_throttle_settings(env),
    )


def producer_pid(env: Mapping[str, str] | None = None) -> int | None:
    """In a local worker: the pid of the `uuid-migrate` that started it (None elsewhere)."""
    raw = (os.environ if env is None else env).get(PRODUCER_PID_VARIABLE)
    return int(raw) if raw and raw.isdigit() else None


def _batch_size(env: Mapping[str, str]) -> int | None:
    if not env.get("BATCH_SIZE"):
        return None
    size = _positive_int(env, "BATCH_SIZE", batch_sizes.LARGEST)  # set: never the default
    if size > MAX_BATCH_SIZE:
        raise ConfigError(f"BATCH_SIZE must be at most {MAX_BATCH_SIZE:,}, got {size:,}")
    return size


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or allowed[0]).lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _basic_auth(raw: str | None) -> str | None:
    """`user:password`, possibly several separated by commas (Flower's own syntax)."""
    if raw is None:
        return None
    for pair in raw.split(","):
        user, _, password = pair.partition(":")
        if not user or not password:
            raise ConfigError("FLOWER_BASIC_AUTH must be user:password (password not shown)")
    return raw


def _recovery_settings(env: Mapping[str, str]) -> dict[str, int]:
    return {
        "batch_max_attempts": _positive_int(env, "BATCH_MAX_ATTEMPTS", DEFAULT_BATCH_MAX_ATTEMPTS),
        "retry_backoff_ms": _int(env, "RETRY_BACKOFF_MS", DEFAULT_RETRY_BACKOFF_MS),
        "retry_backoff_max_ms": _int(env, "RETRY_BACKOFF_MAX_MS", DEFAULT_RETRY_BACKOFF_MAX_MS),
        "heartbeat_timeout_s": _positive_int(
            env, "HEARTBEAT_TIMEOUT_S", DEFAULT_HEARTBEAT_TIMEOUT_S
        ),
        "min_split_rows": _positive_int(env, "MIN_SPLIT_ROWS", DEFAULT_MIN_SPLIT_ROWS),
        "reconcile_interval_s": _positive_int(
            env, "RECONCILE_INTERVAL_S", DEFAULT_RECONCILE_INTERVAL_S
        ),
    }


def _throttle_settings(env: Mapping[str, str]) -> dict[str, float]:
    return {
        "throttle_application_sessions": _int(
            env, "THROTTLE_APPLICATION_SESSIONS", DEFAULT_THROTTLE_APPLICATION_SESSIONS
        ),
        "throttle_application_rest": _seconds(
            env, "THROTTLE_APPLICATION_REST", DEFAULT_THROTTLE_APPLICATION_REST
        ),
        "throttle_replication_lag_s": _seconds(
            env, "THROTTLE_REPLICATION_LAG_S", DEFAULT_THROTTLE_REPLICATION_LAG_S
        ),
        "throttle_oldest_transaction_s": _seconds(
            env, "THROTTLE_OLDEST_TRANSACTION_S", DEFAULT_THROTTLE_OLDEST_TRANSACTION_S
        ),
        "throttle_wal_mb_per_s": _seconds(env, "THROTTLE_WAL_MB_PER_S", DEFAULT_THROTTLE_WAL_MB_PER_S),
    }


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A non-negative number, fractions allowed (0 turns the signal off)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= 0:  # also refuses nan
        raise ConfigError(f"{name} must not be negative, got {raw}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value
