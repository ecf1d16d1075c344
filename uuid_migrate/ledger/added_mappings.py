"""The rows a migration added to an `id_mappings` that was there before it.

Such a table holds the application's own rows too, some written while the migration ran, so
rollback cannot tell the migration's rows by time or table name. Each batch therefore notes
the rows its mapping insert added, in its own statement (`note_cte`), and rollback deletes
exactly those. A row is noted with its `xmin`, the transaction that inserted it: a row the
application updated since has another one, is the application's now, and is kept.

Rows are noted only while a live run holds the snapshot of a pre-existing id_mappings (taken
before the migration first touched it): when the migration created the table, rollback drops
it, and the batches pay for no extra write.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.ledger.tables import LEDGER_SCHEMA
from uuid_migrate.plan.model import MAPPING_TABLE

ADDED_TABLE = qualified(LEDGER_SCHEMA, "added_mappings")
#: The name the snapshot of a pre-existing id_mappings is stored under.
SNAPSHOT_NAME = MAPPING_TABLE
#: What the mapping insert returns for `note_cte`.
RETURNED = sql.SQL("m.table_name, m.old_id, m.xmin AS row_xmin")


def _noting(runs: sql.Composable) -> sql.Composed:
    """Whether rows are noted: one of the runs (`runs`, a condition on `r`) holds the
    snapshot of an id_mappings that was there before the migration."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM {ledger}.snapshots AS s JOIN {ledger}.runs AS r "
        "ON r.run_id = s.run_id WHERE s.table_name = {name} AND {runs})"
    ).format(ledger=sql.Identifier(LEDGER_SCHEMA), name=sql.Literal(SNAPSHOT_NAME), runs=runs)


def note_cte(run_id: str, mapped: str) -> sql.Composed:
    """`noted AS (INSERT ...)`: the rows the CTE `mapped` inserted (returning `RETURNED`),
    noted for the run, unless the migration created id_mappings (no live run then holds
    its snapshot: the condition is evaluated once per statement)."""
    live = sql.SQL("r.status <> {}").format(sql.Literal(str(RunStatus.ROLLED_BACK)))
    return sql.SQL(
        "noted AS (INSERT INTO {added} (run_id, table_name, old_id, row_xmin) "
        "SELECT {run}, table_name, old_id, row_xmin FROM {mapped} WHERE {noting} "
        "ON CONFLICT DO NOTHING RETURNING 1)"
    ).format(
        added=ADDED_TABLE,
        run=sql.Literal(run_id),
        mapped=sql.Identifier(mapped),
        noting=_noting(live),
    )


def noting(cur: Any, run_ids: list[str]) -> bool:
    """Whether these runs (together, one migration) noted the rows they added."""
    cur.execute(sql.SQL("SELECT {}").format(_noting(sql.SQL("r.run_id = ANY(%s)"))), (run_ids,))
    return bool(cur.fetchone()[0])


#: One chunk of a rollback: the next noted rows (in key order, after the last chunk's), the
#: id_mappings rows among them still as the batch wrote them deleted, and the notes of rows
#: deleted or already gone. A note whose row the application changed stays: it names a row
#: kept. All sub-statements see one snapshot, so the notes go by what `gone` returns.
_DELETE_CHUNK = """
WITH chunk AS (
    SELECT run_id, table_name, old_id, row_xmin FROM {added}
    WHERE run_id = ANY(%(runs)s) AND (run_id, table_name, old_id) > (%(run)s, %(table)s, %(old)s)
    ORDER BY run_id, table_name, old_id LIMIT %(limit)s),
gone AS (
    DELETE FROM {mappings} AS m USING chunk AS c
    WHERE m.table_name = c.table_name AND m.old_id = c.old_id AND m.xmin = c.row_xmin
    RETURNING m.table_name, m.old_id),
forgotten AS (
    DELETE FROM {added} AS a USING chunk AS c
    WHERE (a.run_id, a.table_name, a.old_id) = (c.run_id, c.table_name, c.old_id)
    AND ((c.table_name, c.old_id) IN (SELECT table_name, old_id FROM gone)
         OR NOT EXISTS (SELECT 1 FROM {mappings} AS m
                        WHERE m.table_name = c.table_name AND m.old_id = c.old_id))
    RETURNING 1),
last AS (SELECT run_id, table_name, old_id FROM chunk ORDER BY 1 DESC, 2 DESC, 3 DESC LIMIT 1)
SELECT (SELECT count(*) FROM chunk), (SELECT count(*) FROM gone), last.*
FROM (SELECT 1) AS one LEFT JOIN last ON true
"""

#: Where a walk over the notes starts: before every key (a run id is never empty).
START = ("", "", "")


def delete_chunk(
    cur: Any, mappings: sql.Composable, run_ids: list[str], after: tuple[str, str, str], limit: int
) -> tuple[int, int, tuple[str, str, str]]:
    """(notes looked at, rows deleted, the last note's key) for the next `limit` notes."""
    cur.execute(
        sql.SQL(_DELETE_CHUNK).format(added=ADDED_TABLE, mappings=mappings),
        {"runs": run_ids, "run": after[0], "table": after[1], "old": after[2], "limit": limit},
    )
    seen, deleted, *last = cur.fetchone()
    return int(seen), int(deleted), (tuple(last) if seen else after)


def left_over(
    cur: Any, mappings: sql.Composable, run_ids: list[str], limit: int
) -> tuple[tuple[int, list[str]], tuple[int, list[str]]]:
    """Noted rows still in id_mappings, each as (count, a sample of `table_name:old_id`):
    those as the batches wrote them, and those the application changed since (kept)."""
    return _present(cur, mappings, run_ids, True, limit), _present(cur, mappings, run_ids, False, limit)


def _present(
    cur: Any, mappings: sql.Composable, run_ids: list[str], unchanged: bool, limit: int
) -> tuple[int, list[str]]:
    cur.execute(
        sql.SQL(
            "SELECT count(*) OVER (), m.table_name || ':' || m.old_id FROM {added} AS a "
            "JOIN {mappings} AS m ON m.table_name = a.table_name AND m.old_id = a.old_id "
            "WHERE a.run_id = ANY(%s) AND (m.xmin = a.row_xmin) = %s "
            "ORDER BY a.table_name, a.old_id LIMIT %s"
        ).format(added=ADDED_TABLE, mappings=mappings),
        (run_ids, unchanged, limit),
    )
    rows = cur.fetchall()
    return (int(rows[0][0]) if rows else 0), [r[1] for r in rows]


def trigger_note(label: sql.Composable, old_id: sql.Composable, xmin: sql.Composable) -> sql.Composed:
    """The tool's trigger's note of a mapping it inserted (a PL/pgSQL statement): under the
    live run that holds the snapshot of a pre-existing id_mappings, if one does. Dynamic SQL,
    skipped when the ledger is gone, so the application's write never fails for it."""
    statement = (
        f'INSERT INTO "{LEDGER_SCHEMA}".added_mappings (run_id, table_name, old_id, row_xmin) '
        f'SELECT s.run_id, $1, $2, $3 FROM "{LEDGER_SCHEMA}".snapshots AS s '
        f'JOIN "{LEDGER_SCHEMA}".runs AS r ON r.run_id = s.run_id '
        f"WHERE s.table_name = '{SNAPSHOT_NAME}' AND r.status <> '{RunStatus.ROLLED_BACK}' "
        "ORDER BY s.run_id LIMIT 1 ON CONFLICT DO NOTHING"
    )
    return sql.SQL(
        "IF to_regclass({added}) IS NOT NULL THEN EXECUTE {statement} USING {label}, {old_id}, "
        "{xmin}; END IF;"
    ).format(
        added=sql.Literal(f'"{LEDGER_SCHEMA}".added_mappings'),
        statement=sql.Literal(statement),
        label=label,
        old_id=old_id,
        xmin=xmin,
    )
