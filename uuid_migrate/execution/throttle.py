"""Keeping the migration's load within what the database and the application can take.

Three brakes, applied by every worker between batches:

- **A row budget for the whole run** (`max_rows_per_second`, kept in the ledger), shared by
  every worker on every machine through one Redis key: a virtual clock (a generic cell rate
  algorithm). Before a batch, its planned rows are booked: the batch may start when the clock
  says, and moves it forward by rows / budget; afterwards the clock is corrected by the rows
  it really wrote. By any moment t, the run has then written at most budget x t rows, plus one
  batch, whatever the number of workers.
- **The database's health**, looked at before each batch (at most once a second per worker):
  replication lag of any standby, a transaction open for long (it holds back cleanup: every
  row the migration rewrites then stays as a dead version), the rate of WAL written. While one
  is past its threshold the worker waits, its next batch not yet claimed.
- **The application's activity**: while sessions of the database other than the tool's own
  have run a statement within the last second (`application_sessions` or more of them), each
  worker rests between batches `application_rest` times its last batch's duration (a duty
  cycle: 0.5 leaves the application one moment in three). Batches compete with the
  application for the CPU, the WAL and the row locks; resting in proportion keeps that share
  the same whatever the batch size. A database nobody else uses is never slowed down.

While a worker waits, `status` and the progress display show `throttled: <reason>`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from uuid_migrate.ledger import throttles
from uuid_migrate.redis_store import budget_key, throttled_key

#: How long a worker trusts what it read: the budget, the health signals.
RATE_READ_EVERY_S = 5.0
HEALTH_READ_EVERY_S = 1.0
#: A worker waiting on the database looks again this often.
HEALTH_POLL_S = 1.0
#: `throttled` in Redis outlives its last refresh by this much; a pacing worker refreshes it
#: at most every SHOW_EVERY_S.
SHOWN_FOR_S = 5
SHOW_EVERY_S = 2.0
#: One rest while the application is active is at most this long: a worker's first batch of
#: a task may follow a long idle gap (between stages), which is no batch's duration.
MAX_REST_S = 2.0

#: The budget's virtual clock (ms since the epoch, Redis's own clock). ARGV[1]: the cost of
#: a batch to book (ms); ARGV[2]: 1 to book it (it starts at the clock, or now if later), 0 to
#: correct the clock by it (negative: a batch wrote fewer rows than booked). Returns how long
#: to wait before starting (ms).
_BOOK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local clock = tonumber(redis.call('GET', KEYS[1]) or '0')
local starts = clock
if ARGV[2] == '1' and clock < now then starts = now end
clock = starts + tonumber(ARGV[1])
redis.call('SET', KEYS[1], clock, 'PX', math.max(60000, math.floor(clock - now) + 60000))
return math.max(0, math.floor(starts - now))
"""

_HEALTH = """
SELECT (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication),
       (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)
        FROM pg_stat_activity
        WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) AND pid <> pg_backend_pid()
          AND application_name IS DISTINCT FROM current_setting('application_name')),
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),
       (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND backend_type = 'client backend'
          AND pid <> pg_backend_pid()
          AND application_name IS DISTINCT FROM current_setting('application_name')
          AND (state = 'active' OR state_change > clock_timestamp() - interval '1 second'))
"""


@dataclass(frozen=True)
class Limits:
    """The health thresholds and the pacing while the application is active; 0 turns a
    signal off."""

    replication_lag_s: float = 1.5
    oldest_transaction_s: float = 300.0
    wal_mb_per_s: float = 0.0
    application_sessions: int = 1
    application_rest: float = 0.5


class Throttle:
    """One worker's view of the run's budget and of the database's health."""

    def __init__(
        self, redis_conn: redis.Redis | None, limits: Limits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.redis = redis_conn
        self.limits = limits
        self.clock = clock
        self._rates: dict[str, tuple[int, float]] = {}
        self._health: tuple[str | None, float] = (None, float("-inf"))
        self._wal: tuple[float, float] | None = None
        self._sessions = 0  # the application's sessions at the last health reading
        self._started: float | None = None  # when this worker's last batch was let go
        self._shown_at = float("-inf")

    def book(self, cur: Any, run_id: str, rows: int) -> float:
        """Book a batch of `rows` planned rows: the seconds to wait before it starts, for
        the run's budget (none without one, or without Redis) or the application's sake."""
        wait = max(self._book_budget(cur, run_id, rows), self._pace(run_id))
        self._started = self.clock() + wait
        return wait

    def _book_budget(self, cur: Any, run_id: str, rows: int) -> float:
        rate = self.budget(cur, run_id)
        if not rate or not rows or self.redis is None:
            return 0.0
        try:
            wait_ms = self.redis.eval(_BOOK, 1, budget_key(run_id), rows * 1000.0 / rate, "1")
        except redis.RedisError:
            return rows / rate  # alone, the budget is at least this worker's own share
        if wait_ms >= 500:
            self.show(run_id, f"max {rate:,} rows/s")
        return float(wait_ms) / 1000

    def _pace(self, run_id: str) -> float:
        rest = self.rest(self.clock())
        if rest and self.clock() - self._shown_at >= SHOW_EVERY_S:
            self._shown_at = self.clock()
            self.show(run_id, self.pacing())
        return rest

    def rest(self, now: float) -> float:
        """Seconds to rest before the next batch: `application_rest` times the last batch's
        duration (from its start to now) while the application is active, else 0."""
        limits = self.limits
        active = limits.application_sessions and self._sessions >= limits.application_sessions
        if not active or not limits.application_rest or self._started is None:
            return 0.0
        return min(MAX_REST_S, max(0.0, now - self._started) * limits.application_rest)

    def pacing(self) -> str:
        sessions = f"{self._sessions} session{'' if self._sessions == 1 else 's'}"
        return (
            f"the application is active ({sessions}): resting "
            f"{self.limits.application_rest:g} x each batch's time"
        )

    def settle(self, cur: Any, run_id: str, booked: int, written: int) -> None:
        """Correct the clock by the rows a batch wrote beyond (or short of) its booking."""
        rate = self.budget(cur, run_id)
        if rate and written != booked and self.redis is not None:
            with contextlib.suppress(redis.RedisError):
                self.redis.eval(_BOOK, 1, budget_key(run_id), (written - booked) * 1000.0 / rate, "0")

    def reason(self, cur: Any) -> str | None:
        """Why the database needs a rest now, or None."""
        reason, read_at = self._health
        now = self.clock()
        if now - read_at < HEALTH_READ_EVERY_S:
            return reason
        cur.execute(_HEALTH)
        lag, oldest, wal, self._sessions = cur.fetchone()
        reason = self._judge(float(lag), float(oldest), float(wal), now)
        self._health = (reason, now)
        return reason

    def show(self, run_id: str, reason: str) -> None:
        if self.redis is not None:
            with contextlib.suppress(redis.RedisError):  # only the display misses it
                self.redis.set(throttled_key(run_id), reason, ex=SHOWN_FOR_S)

    def _judge(self, lag: float, oldest: float, wal_bytes: float, now: float) -> str | None:
        limits = self.limits
        if limits.replication_lag_s and lag > limits.replication_lag_s:
            return f"replication lag {lag:.1f} s > {limits.replication_lag_s:g} s"
        if limits.oldest_transaction_s and oldest > limits.oldest_transaction_s:
            return (
                f"a transaction open for {oldest:.0f} s > {limits.oldest_transaction_s:g} s "
                "holds back cleanup"
            )
        previous, self._wal = self._wal, (wal_bytes, now)
        if limits.wal_mb_per_s and previous and now > previous[1]:
            rate = (wal_bytes - previous[0]) / (now - previous[1]) / 1e6
            if rate > limits.wal_mb_per_s:
                return f"WAL {rate:.1f} MB/s > {limits.wal_mb_per_s:g} MB/s"
        return None

    def budget(self, cur: Any, run_id: str) -> int:
        """The run's rows per second (0: none), read again every few seconds."""
        rate, read_at = self._rates.get(run_id, (0, float("-inf")))
        if self.clock() - read_at >= RATE_READ_EVERY_S:
            rate = throttles.rate_of(cur, run_id)
            self._rates[run_id] = (rate, self.clock())
        return rate
