"""How a table is cut into batches: over its key, one column or several, in index order, or,
for a table without a key, over its physical blocks.

A single-column key's bounds are its values as text; a composite key's bounds are JSON arrays
of its values as text (`["o-17", "sku-4"]`), compared as rows, `(a, b) > (x, y)`, which is the
order of the key's own index. A keyless table's bounds are block numbers: the range (lo, hi]
holds the rows whose `ctid` lies in blocks lo to hi - 1 (a TID range scan). A row an update
moves to a block still to come is simply seen again: batches are idempotent. A row's id in
error records is the same text as its bound would be (its `ctid` for a keyless table).

A batch statement may also be scoped to a set of rows named by those ids (`RowSet`), as the
final sweep does with the few rows that raced with the triggers: the same statement, written
for exactly those rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from psycopg2 import sql

from uuid_migrate.plan.ranges import KeyRange


@dataclass(frozen=True)
class RowSet:
    """Rows named by their ids, as `Cut.row_id` gives them (never empty)."""

    ids: tuple[str, ...]

    def label(self) -> str:
        return f"{len(self.ids)} rows by id"


#: What one batch statement covers: a range of the key, or rows named by their ids.
Scope: TypeAlias = KeyRange | RowSet


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

    def condition(self, alias: sql.Composable, scope: Scope) -> sql.Composed:
        """`lower < key <= upper`, a missing bound left out so the index scan stays open; or
        the rows a RowSet names."""
        if isinstance(scope, RowSet):
            return self._rows_condition(alias, scope)
        key_range = scope
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

    def _rows_condition(self, alias: sql.Composable, rows: RowSet) -> sql.Composed:
        """The rows with these ids. The array is an untyped literal, so it takes the key
        column's own type and collation (as a bound does) and the key's index or a TID scan
        finds them. A composite key is looked up by its first column, each row then matched
        on its whole id, the text `row_id` gives (a hashed `= ANY`): a list of row
        constructors costs time quadratic in its length, and fails past a few thousand."""
        if not self.composite:
            return sql.SQL("{} = ANY({})").format(self._refs(alias)[0], _array(rows.ids))
        firsts = dict.fromkeys(json.loads(i)[0] for i in rows.ids)
        return sql.SQL("{} = ANY({}) AND {} = ANY({}::text[])").format(
            self._refs(alias)[0], _array(firsts), self.row_id(alias), _array(rows.ids)
        )

    def _key(self, alias: sql.Composable) -> sql.Composable:
        refs = self._refs(alias)
        return refs[0] if not self.composite else sql.SQL("({})").format(sql.SQL(", ").join(refs))

    def _bound(self, bound: str) -> sql.Composable:
        if not self.composite:
            return sql.Literal(bound)
        values = json.loads(bound)
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(v) for v in values))


def _array(values: Iterable[str]) -> sql.Composable:
    """An array literal of text values, `'{"a","b"}'`, every element quoted (so none reads
    as NULL) with its quotes and backslashes escaped."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return sql.Literal("{" + ",".join(quoted) + "}")


def _first_tid(block: str) -> sql.Composable:
    """The first tuple id of a block: `(n,0)`."""
    return sql.Literal(f"({int(block)},0)")


def cut_of(table: object) -> Cut:
    """The cut of a plan's table: its composite key, its key, or (none) its blocks."""
    columns = getattr(table, "key_columns", ()) or (
        (table.key,) if table.key else ()  # type: ignore[attr-defined]
    )
    return Cut(tuple(columns))
