"""The collation each reference is compared under, from the catalog: the referenced column's.

That is how PostgreSQL's foreign keys compare (the SQL standard's rule): the check of a new
child row, `SELECT 1 FROM parent WHERE key = $1`, takes the key's collation, and the check of
existing rows when a foreign key is added joins on `fk.col COLLATE <the key's>`. So the parent
row a reference names is the one whose column equals it under the parent column's collation:
`'u1'` names `'U1'` under a case-insensitive key, whatever the child column's collation.

A reference under the same collation as its parent column needs nothing. One under another is
compared with an explicit `COLLATE` on the child's side (`Relation.compared`): with two
collations side by side PostgreSQL cannot choose ("could not determine which collation to
use"), and the parent's index, built under its own, still serves the lookup.

Refused, because no comparison can name the one row a foreign key names:
- a reference to a unique column under a nondeterministic collation whose unique index is
  under another one: values unique under the index's collation may be equal under the column's;
- a reference reached through another table's foreign key (a composite key's column) whose
  referenced column is under a nondeterministic collation other than the migrated key's: equal
  there does not mean equal to the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from uuid_migrate.identifiers import regclass_text
from uuid_migrate.plan.model import Plan, Relation

_COLUMNS = """
SELECT ca.attcollation, pa.attcollation,
       ARRAY(SELECT i.indcollation[0] FROM pg_index i WHERE i.indrelid = pa.attrelid
             AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL
             AND i.indkey[0] = pa.attnum)
FROM pg_attribute ca, pg_attribute pa
WHERE ca.attrelid = to_regclass(%(child)s) AND ca.attname = %(column)s
  AND ca.attnum > 0 AND NOT ca.attisdropped
  AND pa.attrelid = to_regclass(%(parent)s) AND pa.attname = %(parent_column)s
  AND pa.attnum > 0 AND NOT pa.attisdropped
"""

#: Each foreign key holding the child's column: whether it references the parent's column
#: itself, the collation of the column it references there, and that column's name.
_FOREIGN_KEYS = """
SELECT ra.attrelid = to_regclass(%(parent)s) AND ra.attname = %(parent_column)s,
       ra.attcollation, k.confrelid::regclass::text || '.' || quote_ident(ra.attname)
FROM pg_constraint k CROSS JOIN LATERAL unnest(k.conkey, k.confkey) AS u(c, r)
JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = u.c
JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = u.r
WHERE k.contype = 'f' AND k.conparentid = 0 AND k.conrelid = to_regclass(%(child)s)
  AND ca.attname = %(column)s
"""

_COLLATIONS = """
SELECT c.oid, n.nspname, c.collname, c.collisdeterministic FROM pg_collation c
JOIN pg_namespace n ON n.oid = c.collnamespace WHERE c.oid = ANY(%s::oid[])
"""


@dataclass(frozen=True)
class Collation:
    schema: str
    name: str
    deterministic: bool

    @property
    def label(self) -> str:
        """As a plan names it: `schema.name`."""
        return f"{self.schema}.{self.name}"

    def describe(self) -> str:
        return self.label if self.deterministic else f"{self.label} (nondeterministic)"


def compare_as_foreign_keys(cur: Any, plan: Plan) -> tuple[Plan, list[tuple[Relation, str]]]:
    """The plan with each relation's collation filled from the catalog, and the relations
    that cannot be compared as a foreign key would, each with the reason. A relation whose
    columns are missing is kept as it is (resolving refuses it, validation reports it)."""
    relations: list[Relation] = []
    refused: list[tuple[Relation, str]] = []
    for rel in plan.relations:
        params = _params(plan, rel)
        cur.execute(_COLUMNS, params)
        row = cur.fetchone()
        if row is None:
            relations.append(rel)
            continue
        child_oid, parent_oid, unique_under = row
        cur.execute(_FOREIGN_KEYS, params)
        keys = cur.fetchall()
        names = _collations(cur, [child_oid, parent_oid, *unique_under, *(k[1] for k in keys)])
        parent = names.get(parent_oid)
        wanted = parent.label if parent and child_oid in names and child_oid != parent_oid else ""
        unique = [names[oid] for oid in unique_under if oid in names]
        reason = _why_not(plan, rel, parent, unique, keys, names, wanted)
        relations.append(replace(rel, collation=wanted))
        if reason:
            refused.append((relations[-1], reason))
    return replace(plan, relations=tuple(relations)), refused


def _params(plan: Plan, rel: Relation) -> dict[str, str]:
    return {
        "child": regclass_text(*plan.where(rel.table)),
        "column": rel.column,
        "parent": regclass_text(*plan.where(rel.parent)),
        "parent_column": plan.parent_column(rel),
    }


def _collations(cur: Any, oids: list[int]) -> dict[int, Collation]:
    """Collations by oid; a column of a type without one (oid 0) is not among them."""
    cur.execute(_COLLATIONS, ([o for o in oids if o],))
    return {oid: Collation(schema, name, bool(det)) for oid, schema, name, det in cur.fetchall()}


def _why_not(
    plan: Plan, rel: Relation, parent: Collation | None, unique: list[Collation],
    keys: list[tuple], names: dict[int, Collation], wanted: str,
) -> str | None:  # fmt: skip
    """Why `rel` cannot be compared as its foreign key compares; None when it can."""
    where = f"{rel.parent}.{plan.parent_column(rel)}"
    if parent is None:
        return None  # not a collatable type: nothing to choose
    if rel.collation and rel.collation != wanted:
        found = wanted or "the referencing column's own"
        return f"the plan compares it under collation {rel.collation}, the catalog under {found}"
    if unique and not parent.deterministic and parent not in unique:
        under = ", ".join(c.label for c in unique)
        return (
            f"{where} is under {parent.describe()} but unique only under {under}, so one "
            f"value could name several {rel.parent} rows"
        )
    if not rel.declared or any(direct for direct, _, _ in keys):
        return None
    for _, oid, referenced in keys:
        through = names.get(oid)
        if through is not None and through != parent and not through.deterministic:
            return (
                f"its foreign key compares it with {referenced} under {through.describe()}, "
                f"but {where} is under {parent.describe()}: which row it names cannot be told"
            )
    return None
