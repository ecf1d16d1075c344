"""Live progress in Redis: counters per stage and run, and each stage's checkpoint.

Written after the batch's commit; PostgreSQL stays the truth and Redis can be rebuilt from it.
Counting is idempotent per batch, so a batch delivered twice is counted once.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from uuid_migrate.redis_store import run_key, run_pattern

#: Progress keys outlive the run by a week, then Redis drops them.
KEY_TTL_S = 7 * 24 * 3600

# KEYS: done-set, stage hash, run hash. ARGV: batch no, processed, changed, failed flag, ttl.
_COUNT_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local field = 'processed'
if ARGV[4] == '1' then field = 'failed' end
redis.call('HINCRBY', KEYS[2], field, ARGV[2])
redis.call('HINCRBY', KEYS[2], 'changed', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'batches_done', 1)
redis.call('HINCRBY', KEYS[3], field, ARGV[2])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""


class Progress:
    """Counters and checkpoints of one run."""

    def __init__(self, conn: redis.Redis, run_id: str) -> None:
        self.conn = conn
        self.run_id = run_id

    def _key(self, *parts: str) -> str:
        return run_key(self.run_id, *parts)

    def set_totals(self, stage: str, total_rows: int, batches: int) -> None:
        pipe = self.conn.pipeline()
        pipe.hset(self._key("stage", stage), mapping={"total": total_rows, "batches": batches})
        pipe.expire(self._key("stage", stage), KEY_TTL_S)
        pipe.hincrby(self._key("run"), "total", 0)
        pipe.expire(self._key("run"), KEY_TTL_S)
        pipe.execute()

    def set_run_total(self, total_rows: int) -> None:
        self.conn.hset(self._key("run"), "total", total_rows)
        self.conn.expire(self._key("run"), KEY_TTL_S)

    def count_batch(
        self, stage: str, batch_no: int, planned: int, changed: int, failed: bool
    ) -> bool:
        """Add one finished batch to the counters, once; False if it was counted already."""
        keys = [self._key("done", stage), self._key("stage", stage), self._key("run")]
        args = [batch_no, planned, changed, "1" if failed else "0", KEY_TTL_S]
        return bool(self.conn.eval(_COUNT_ONCE, len(keys), *keys, *args))

    def stage(self, stage: str) -> dict[str, int]:
        raw = self.conn.hgetall(self._key("stage", stage))
        return {k: int(v) for k, v in raw.items()}

    def run(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.conn.hgetall(self._key("run")).items()}

    def write_checkpoint(self, stage: str, checkpoint: dict[str, Any]) -> None:
        self.conn.set(self._key("checkpoint", stage), json.dumps(checkpoint), ex=KEY_TTL_S)

    def checkpoint(self, stage: str) -> dict[str, Any] | None:
        raw = self.conn.get(self._key("checkpoint", stage))
        return json.loads(raw) if raw else None

    def throttle(self, name: str, every_s: float) -> bool:
        """True at most once per `every_s` for `name` across every worker (SET NX PX)."""
        return bool(self.conn.set(self._key("throttle", name), 1, nx=True, px=int(every_s * 1000)))

    def forget(self) -> int:
        """Delete every key of the run (rollback); returns how many were removed."""
        keys = list(self.conn.scan_iter(match=run_pattern(self.run_id), count=500))
        return self.conn.delete(*keys) if keys else 0
