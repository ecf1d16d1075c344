"""What a table looked like before the migration, to prove a rollback restored it.

A snapshot holds the table's definition (columns with types, defaults and collations, indexes,
constraints, triggers) and a checksum of its data over the columns it had then. The checksum
is a sum of per-row hashes: it needs no sort and constant memory, whatever the table's size,
and any changed, added or removed row changes it.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.ledger import snapshots

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), CASE WHEN a.attcollation <> t.typcollation
       THEN a.attcollation::regcollation::text END, a.attidentity, a.attgenerated
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s) ORDER BY 1
"""
_CONSTRAINTS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = to_regclass(%s) ORDER BY 1
"""
_TRIGGERS = """
SELECT tgname, pg_get_triggerdef(oid), tgenabled::text FROM pg_trigger
WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal ORDER BY 1
"""
_PARTS = {"indexes": _INDEXES, "constraints": _CONSTRAINTS, "triggers": _TRIGGERS}
_SINGULAR = {"indexes": "index", "constraints": "constraint", "triggers": "trigger"}


def definition(cur: Any, schema: str, table: str) -> dict[str, list[list[Any]]]:
    """Columns in order, then indexes, constraints and triggers by name, as plain lists."""
    name = regclass_text(schema, table)
    cur.execute(_COLUMNS, (name,))
    out = {"columns": [list(row) for row in cur.fetchall()]}
    for part, query in _PARTS.items():
        cur.execute(query, (name,))
        out[part] = [list(row) for row in cur.fetchall()]
    return out


#: Per-row hashes of a checksum, by the name stored with it. A snapshot stored without a name
#: (by an older version) was taken with md5. `hashtextextended` over the row's text is exact
#: to the byte like md5 (the text is under the default collation, which is deterministic)
#: and costs about half as much: the snapshot is read before every run's first change.
ROW_HASHES = {
    "md5": "('x' || left(md5({row}), 16))::bit(64)::bigint",
    "hashtextextended": "hashtextextended({row}, 0)",
}
ROW_HASH = "hashtextextended"


def data_checksum(
    cur: Any, schema: str, table: str, columns: list[str], method: str = ROW_HASH
) -> dict[str, Any]:
    """Row count and the sum of each row's 64-bit hash over `columns` (their row's text).
    The sum of bigints is an exact numeric, accumulated in 128 bits: the same value a sum
    of numerics gives (as older versions computed it), about 6% sooner."""
    row = sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in columns)
    )
    cur.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum({hash}), 0)::text FROM {t} AS c"
        ).format(hash=sql.SQL(ROW_HASHES[method]).format(row=row), t=qualified(schema, table))
    )
    rows, total = cur.fetchone()
    checksum: dict[str, Any] = {"rows": int(rows), "sum": total}
    return checksum if method == "md5" else {**checksum, "hash": method}


def capture(cur: Any, run_id: str, schema: str, table: str, name: str) -> None:
    """Store the snapshot of `schema.table`, known to the plan as `name`, for the run (once:
    an existing one is kept)."""
    shape = definition(cur, schema, table)
    checksum = data_checksum(cur, schema, table, [c[0] for c in shape["columns"]])
    # where the table is, so a rollback finds it whatever plan the last run had
    snapshots.store(cur, run_id, name, {**shape, "where": [schema, table]}, checksum)


def where_of(snap: dict[str, Any]) -> tuple[str, str] | None:
    """(schema, table) a snapshot was taken of; None for one stored by an older version."""
    where = snap["definition"].get("where")
    return (where[0], where[1]) if where else None


def differences(cur: Any, schema: str, table: str, snap: dict[str, Any]) -> list[str]:
    """What differs now from the snapshot, one phrase each; empty when restored exactly."""
    now = definition(cur, schema, table)
    before = snap["definition"]
    found = _part_differences("column", before["columns"], now["columns"])
    for part in _PARTS:
        found += _part_differences(_SINGULAR[part], before[part], now[part])
    if found:
        return found
    method = snap["checksum"].get("hash", "md5")
    checksum = data_checksum(cur, schema, table, [c[0] for c in before["columns"]], method)
    if checksum != snap["checksum"]:
        found.append(
            f"data differs: {snap['checksum']['rows']} rows before, {checksum['rows']} now, "
            f"checksum {'same' if checksum['sum'] == snap['checksum']['sum'] else 'differs'}"
        )
    return found


def _part_differences(kind: str, before: list[list[Any]], now: list[list[Any]]) -> list[str]:
    old = {row[0]: row for row in before}
    new = {row[0]: row for row in now}
    found = [f"{kind} {name} is missing" for name in old if name not in new]
    found += [f"{kind} {name} was not there before" for name in new if name not in old]
    found += [f"{kind} {name} changed" for name in old if name in new and old[name] != new[name]]
    if not found and kind == "column" and list(old) != list(new):
        found.append("columns are in another order")
    return found
