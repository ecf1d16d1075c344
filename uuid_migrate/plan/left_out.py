"""Foreign keys to a plan file's migrated tables that the file does not translate: said as
the plan's skipped entries, so a plan written by hand is never silently incomplete (`run`
prints them, `validate` warns of each, the run's reports keep them)."""

from __future__ import annotations

from typing import Any

from uuid_migrate.identifiers import regclass_text
from uuid_migrate.plan.model import Plan, Skipped

_FOREIGN_KEYS_TO = """
SELECT k.conname, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.num ORDER BY u.ord),
       pn.nspname, pc.relname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0 AND k.confrelid = ANY(%s::regclass[])
ORDER BY 2, 3, 1
"""


def left_out(cur: Any, plan: Plan) -> tuple[Skipped, ...]:
    """A `skipped` entry for each foreign key to a migrated table of the plan none of whose
    columns the plan translates."""
    parents = [regclass_text(*plan.where(t.name)) for t in plan.migrated()]
    cur.execute(_FOREIGN_KEYS_TO, (parents,))
    translated = {(plan.where(r.table), r.column) for r in plan.relations}
    listed = {s.name for s in plan.skipped}
    found = []
    for name, schema, child, columns, parent_schema, parent in cur.fetchall():
        if any(((schema, child), column) in translated for column in columns):
            continue
        label = f"{schema}.{child}({', '.join(columns)}) -> {parent_schema}.{parent} [{name}]"
        if label not in listed:
            reason = "not in the plan file: its references keep their string ids only"
            found.append(Skipped("foreign_key", label, reason))
    return tuple(found)
