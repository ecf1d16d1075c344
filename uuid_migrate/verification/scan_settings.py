"""How the whole-table scans of validation and of the final sweep are run: their settings, and
fresh statistics for the mapping table they join.

Each scan hashes one table against another (a parent, id_mappings): with the server's default
`work_mem` (4 MB) a hash of a million keys is cut into dozens of batches written to disk and
read back; a larger one, for this transaction only, keeps it in memory. JIT compiling costs
more than it saves on such scans. And id_mappings is created empty by the migration: until
autovacuum gets to it, the planner believes it holds the few rows it had when created, and
reads it through a bitmap index scan instead of one pass.
"""

from __future__ import annotations

from typing import Any

import psycopg2
from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.plan.model import MAPPING_TABLE, Plan

#: work_mem for a scan's transaction, never lowered below the server's own setting. Per hash
#: (twice that with the default hash_mem_multiplier) and per parallel process.
SCAN_WORK_MEM = "64MB"
#: How long the statistics refresh may wait for its lock; it is skipped beyond that.
STATISTICS_LOCK_TIMEOUT = "200ms"
#: id_mappings is analyzed once this share of its rows changed since its last analyze.
STALE_SHARE = 0.1


def for_scans(cur: Any) -> None:
    """This transaction's settings for whole-table scans: JIT off, a larger work_mem."""
    cur.execute(
        "SELECT set_config('jit', 'off', true), "
        "CASE WHEN pg_size_bytes(current_setting('work_mem')) < pg_size_bytes(%s) "
        "THEN set_config('work_mem', %s, true) END",
        (SCAN_WORK_MEM, SCAN_WORK_MEM),
    )


def refresh_mapping_statistics(conn: Any, plan: Plan) -> bool:
    """ANALYZE id_mappings when its statistics are stale, in a short transaction of its own
    (committed: the scans after it plan with them, and its lock is not held while they run);
    True when it was analyzed.

    Best effort: a lock it cannot take soon (autovacuum is at it), a read-only transaction or
    a table the role does not own (ANALYZE then only warns) leaves the statistics as they are.
    """
    try:
        with conn.cursor() as cur:
            if not _stale(cur, plan):
                conn.commit()
                return False
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (STATISTICS_LOCK_TIMEOUT,))
            cur.execute(sql.SQL("ANALYZE {}").format(qualified(plan.schema, MAPPING_TABLE)))
        conn.commit()
        return True
    except psycopg2.Error:
        conn.rollback()
        return False


def _stale(cur: Any, plan: Plan) -> bool:
    cur.execute(
        "SELECT n_mod_since_analyze > %s * greatest(n_live_tup, 1) "
        "FROM pg_stat_all_tables WHERE relid = to_regclass(%s)",
        (STALE_SHARE, regclass_text(plan.schema, MAPPING_TABLE)),
    )
    row = cur.fetchone()
    return bool(row and row[0])
