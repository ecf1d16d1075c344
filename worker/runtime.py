"""Per-process resources of a worker: one PostgreSQL connection and one Redis client.

Created lazily, in the pool process that uses them (never before the fork), and replaced
when PostgreSQL or Redis dropped them.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import redis

from config.settings import Settings
from uuid_migrate import db
from uuid_migrate.execution.batch_cutting import BatchCutter
from uuid_migrate.execution.throttle import Limits, Throttle
from uuid_migrate.redis_store import client

_state: dict[str, Any] = {}


def database(settings: Settings) -> Any:
    conn = _state.get("db")
    if conn is None or conn.closed:
        conn = db.connect(settings.require_database())
        _state["db"] = conn
    return conn


def drop_database() -> None:
    conn = _state.pop("db", None)
    if conn is not None and not conn.closed:
        conn.close()


def redis_client(settings: Settings) -> redis.Redis:
    if "redis" not in _state:
        _state["redis"] = client(settings.redis_url)
    return _state["redis"]


def throttle(settings: Settings) -> Throttle:
    """This process's brakes: kept across batches, for the health signals' last readings."""
    if "throttle" not in _state:
        limits = Limits(
            replication_lag_s=settings.throttle_replication_lag_s,
            oldest_transaction_s=settings.throttle_oldest_transaction_s,
            wal_mb_per_s=settings.throttle_wal_mb_per_s,
            application_sessions=settings.throttle_application_sessions,
            application_rest=settings.throttle_application_rest,
        )
        _state["throttle"] = Throttle(redis_client(settings), limits)
    return _state["throttle"]


def batch_cutter(settings: Settings) -> BatchCutter:
    """This process's record of its batches' time per row, kept across batches."""
    if "cutter" not in _state:
        _state["cutter"] = BatchCutter(settings.batch_target_ms, settings.min_split_rows)
    return _state["cutter"]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
