"""The one retry decision: which errors are worth another try, how long to wait first, and
when the attempts are used up. Batches, Celery callbacks and schema changes all ask here.

A batch's transaction either commits with its ledger row or not at all, and schema steps and
callbacks are idempotent, so trying again is always safe; the only questions are whether it
can succeed next time and when to try.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import redis

from uuid_migrate.errors import ConnectionFailed

#: A statement or lock timeout: a batch did too much at once, so it is split rather than
#: tried the same again; a schema change waits and tries again.
SPLIT = "split"
#: The error belongs to the moment (a lost connection, a deadlock): try the same again later.
TRANSIENT = "transient"
#: Two rows drew the same UUID ("Duplicate UUID"): try again with fresh ones.
DUPLICATE_UUID = "duplicate_uuid"
#: Anything else (a trigger raising, a bad value) fails the same way every time.
PERMANENT = "permanent"

_SPLIT_ERRORS = (psycopg2.errors.QueryCanceled, psycopg2.errors.LockNotAvailable)
_TRANSIENT_ERRORS = (
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.DeadlockDetected,
    # Connection lost, server restarting, admin shutdown (57P01), too many connections...
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    ConnectionFailed,
    # Redis away: a callback tries again (a batch never waits on Redis).
    redis.RedisError,
)
#: Errors of class 55 that clear by themselves: a lock not available, an object in use.
_CLEARING_55 = ("55P03", "55006")
#: The unique index id_mappings keeps on new_id (see ddl.CreateMappingTable).
MAPPING_UUID_INDEX = "id_mappings_new_id_key"
#: Suffix of the unique index built on a table's uuid_id (see ddl.index_name).
UUID_INDEX_SUFFIX = "_uuid_id_key"


@dataclass(frozen=True)
class RetryPolicy:
    """How one batch is retried; built from Settings by the worker."""

    max_attempts: int = 5
    backoff_ms: int = 500
    backoff_max_ms: int = 30_000
    min_split_rows: int = 10
    statement_timeout_ms: int = 0
    #: How long a batch waits for a row lock the application holds (0: no limit).
    lock_timeout_ms: int = 500

    def delay_s(self, attempt: int) -> float:
        return compute_backoff(attempt, self.backoff_ms, self.backoff_max_ms) / 1000


def should_retry(kind: str, attempt: int, max_attempts: int) -> bool:
    """Another try after failed try number `attempt` (1-based) of an error of `kind`."""
    return kind != PERMANENT and attempt < max_attempts


def lock_timed_out(exc: BaseException) -> bool:
    """The statement gave up waiting for a lock (`lock_timeout`): for a schema change, the
    one error worth waiting out and trying again."""
    return isinstance(exc, psycopg2.errors.LockNotAvailable)


def attempts_exhausted(attempts_ended: int, max_attempts: int) -> bool:
    """Tries that ended without finishing (their worker died with them) used every attempt:
    a batch that takes its worker down must not be sent again for ever."""
    return attempts_ended >= max_attempts


def compute_backoff(
    attempt: int, base_ms: int, max_ms: int, rand: Callable[[], float] = random.random
) -> float:
    """Milliseconds to wait after failed try number `attempt` (1-based): full jitter.

    A uniform draw from [0, min(max_ms, base_ms * 2 ** (attempt - 1))], so workers that failed
    together (a restarted server) do not all come back at the same instant.
    """
    if attempt < 1 or base_ms <= 0:
        return 0.0
    ceiling = min(max_ms, base_ms * 2 ** min(attempt - 1, 32))
    return ceiling * rand()


def classify(exc: BaseException, uuid_index: str = "") -> str:
    """SPLIT, TRANSIENT, DUPLICATE_UUID or PERMANENT for an error raised by a batch.

    `uuid_index` is the name of the table's unique index on uuid_id (shortened with a hash
    when the table's name is long, so the suffix alone cannot recognise it).
    """
    if isinstance(exc, _SPLIT_ERRORS):
        return SPLIT
    if isinstance(exc, psycopg2.errors.UniqueViolation) and _is_uuid_index(exc, uuid_index):
        return DUPLICATE_UUID
    if isinstance(exc, _TRANSIENT_ERRORS) and not _cannot_clear(exc):
        return TRANSIENT
    return PERMANENT


def _cannot_clear(exc: BaseException) -> bool:
    """psycopg2 files some errors that never clear under OperationalError: an object not in
    the state the statement needs (55000: a table that publishes updates without a replica
    identity), besides the lock and in-use errors of that class, which do clear."""
    code = getattr(exc, "pgcode", None) or ""
    return code.startswith("55") and code not in _CLEARING_55


def _is_uuid_index(exc: psycopg2.Error, uuid_index: str) -> bool:
    name = getattr(exc.diag, "constraint_name", None) or ""
    known = {MAPPING_UUID_INDEX, uuid_index} - {""}
    return bool(name) and (name in known or name.endswith(UUID_INDEX_SUFFIX))


def one_line(exc: BaseException) -> str:
    """The first line of an error, with its SQLSTATE when PostgreSQL gave one."""
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    code = getattr(exc, "pgcode", None)
    return f"{message} [{code}]" if code else message
