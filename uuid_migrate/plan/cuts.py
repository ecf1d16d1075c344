"""How a table is cut into batches: over its key, one column or several, in index order, or,
for a table without a key, over its physical blocks.

A single-column key's bounds are its values as text; a composite key's bounds are JSON arrays
of its values as text (`["o-17", "sku-4"]`), compared as rows, `(a, b) > (x, y)`, which is the
order of the key's own index. A keyless table's bounds are block numbers: the range (lo, hi]
holds the rows whose `ctid` lies in blocks lo to hi - 1 (a TID range scan). A row an update
moves to a block still to come is simply seen again: batches are idempotent. A row's id in
error records is the same text as its bound would be (its `ctid` for a keyless table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg2 import sql

from uuid_migrate.plan.ranges import KeyRange


@dataclass(frozen=True)
class Cut:
    """The key columns batches are cut on, in the key's order."""

    columns: tuple[str, ...]

    @property
    def composite(self) -> bool:
        return len(self.columns) > 1

    @property
    def blocks(self) -> bool:
        """No key: batches over block ranges (`ctid`)."""
        return not self.columns

    def describe(self) -> str:
        if self.blocks:
            return "block ranges (ctid): the table has no primary key"
        if self.composite:
            return f"key ranges over ({', '.join(self.columns)}), compared as rows"
        return f"key ranges over {self.columns[0]}"

    def _refs(self, alias: sql.Composable) -> list[sql.Composed]:
        if self.blocks:
            return [sql.SQL("{}.ctid").format(alias)]
        return [sql.SQL("{}.{}").format(alias, sql.Identifier(c)) for c in self.columns]

    def order_by(self, alias: sql.Composable) -> sql.Composed:
        return sql.SQL(", ").join(self._refs(alias))

    def row_id(self, alias: sql.Composable) -> sql.Composed:
        """A row's id as text: its key, or its key's values as a JSON array.

        Under the database's default collation, deterministic, like the text columns it is
        compared with (`id_mappings.old_id`, the error records' ids): the id matches its
        exact text, never one merely equal under the key's own (say case-insensitive) one.
        """
        refs = self._refs(alias)
        if not self.composite:
            return sql.SQL('({}::text COLLATE pg_catalog."default")').format(refs[0])
        texts = sql.SQL(", ").join(sql.SQL("{}::text").format(r) for r in refs)
        return sql.SQL("json_build_array({})::text").format(texts)

    def condition(self, alias: sql.Composable, key_range: KeyRange) -> sql.Composed:
        """`lower < key <= upper`, a missing bound left out so the index scan stays open."""
        if self.blocks:
            return self._block_condition(alias, key_range)
        parts = []
        if key_range.lower is not None:
            parts.append(sql.SQL("{} > {}").format(self._key(alias), self._bound(key_range.lower)))
        if key_range.upper is not None:
            parts.append(sql.SQL("{} <= {}").format(self._key(alias), self._bound(key_range.upper)))
        if not parts:
            return sql.Composed([sql.SQL("true")])
        return sql.Composed([sql.SQL(" AND ").join(parts)])

    def _block_condition(self, alias: sql.Composable, key_range: KeyRange) -> sql.Composed:
        ctid = sql.SQL("{}.ctid").format(alias)
        parts = []
        if key_range.lower is not None:
            parts.append(sql.SQL("{} >= {}::tid").format(ctid, _first_tid(key_range.lower)))
        if key_range.upper is not None:
            parts.append(sql.SQL("{} < {}::tid").format(ctid, _first_tid(key_range.upper)))
        if not parts:
            return sql.Composed([sql.SQL("true")])
        return sql.Composed([sql.SQL(" AND ").join(parts)])

    def _key(self, alias: sql.Composable) -> sql.Composable:
        refs = self._refs(alias)
        return refs[0] if not self.composite else sql.SQL("({})").format(sql.SQL(", ").join(refs))

    def _bound(self, bound: str) -> sql.Composable:
        if not self.composite:
            return sql.Literal(bound)
        values = json.loads(bound)
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(v) for v in values))


def _first_tid(block: str) -> sql.Composable:
    """The first tuple id of a block: `(n,0)`."""
    return sql.Literal(f"({int(block)},0)")


def cut_of(table: object) -> Cut:
    """The cut of a plan's table: its composite key, its key, or (none) its blocks."""
    columns = getattr(table, "key_columns", ()) or (
        (table.key,) if table.key else ()  # type: ignore[attr-defined]
    )
    return Cut(tuple(columns))
