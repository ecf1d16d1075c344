"""Redis: the client, and the name of every key the tool keeps there.

Redis holds live progress, checkpoints and heartbeats; PostgreSQL stays the truth, and every
key can be rebuilt from the ledger or simply expires.
"""

from __future__ import annotations

import redis

from uuid_migrate.errors import ConnectionFailed

#: Every key starts with this, then the run id.
PREFIX = "uuid_migrate"


def client(url: str) -> redis.Redis:
    """A Redis client that has answered a PING, or ConnectionFailed."""
    try:
        conn = redis.Redis.from_url(url, socket_connect_timeout=5, decode_responses=True)
        conn.ping()
    except (redis.RedisError, ValueError) as exc:
        raise ConnectionFailed(f"cannot reach Redis: {_safe(exc)}") from None
    return conn


def _safe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split("@")[-1] if "@" in text else text


def run_key(run_id: str, *parts: str) -> str:
    """`uuid_migrate:<run>:<part>:...`: progress counters and checkpoints of one run."""
    return ":".join((PREFIX, run_id, *parts))


def run_pattern(run_id: str) -> str:
    """Every key of the run, for SCAN."""
    return f"{PREFIX}:{run_id}:*"


def heartbeat_key(run_id: str, stage: str, batch_no: int) -> str:
    return run_key(run_id, "heartbeat", stage, str(batch_no))


def heartbeat_pattern(run_id: str) -> str:
    return run_key(run_id, "heartbeat", "*")


def throttled_key(run_id: str) -> str:
    """Why the run's workers wait between batches now; expires soon after they stop."""
    return run_key(run_id, "throttled")


def budget_key(run_id: str) -> str:
    """The run's row budget's virtual clock (ms), shared by every worker."""
    return run_key(run_id, "budget")


def throttled(conn: redis.Redis, run_id: str) -> str | None:
    """The reason in `throttled_key`, or None (also when Redis cannot say)."""
    try:
        value = conn.get(throttled_key(run_id))
    except redis.RedisError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def reconciler_key(run_id: str) -> str:
    """Taken (SET NX) by whoever schedules the run's next reconciler pass."""
    return run_key(run_id, "reconciler")
