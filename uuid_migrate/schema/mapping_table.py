"""The unique indexes `id_mappings` needs, each a step of its own.

The batches' `ON CONFLICT (table_name, old_id)` needs a unique index on exactly those
columns, and `new_id` is kept unique so no UUID is handed out twice. A table the migration
creates gets both with it (`CreateMappingTable`). An id_mappings that was there before keeps
the indexes it has: a step finds any fitting unique index, whatever its name, and builds only
what is missing, concurrently so the application's writes go on; being recorded as created,
only what a step built is dropped by rollback.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.plan.model import MAPPING_TABLE
from uuid_migrate.schema.partitioned import index_validity

#: The indexes by name and columns; `retrying` knows the second by its name.
MAPPING_INDEXES = (
    ("id_mappings_table_name_old_id_key", ("table_name", "old_id")),
    ("id_mappings_new_id_key", ("new_id",)),
)
#: Duplicates named in the refusal.
DUPLICATES_SHOWN = 3

#: Valid, immediate (ON CONFLICT takes no deferrable one), whole-table unique indexes, each
#: with its key columns sorted.
_UNIQUE_KEYS = """
SELECT (SELECT array_agg(a.attname::text ORDER BY a.attname::text COLLATE "C")
        FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(num, pos)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
        WHERE k.pos <= i.indnkeyatts)
FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid
AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL
"""


@dataclass(frozen=True)
class MappingIndex:
    """A unique index of id_mappings, built concurrently when the table lacks one."""

    schema: str
    name: str
    columns: tuple[str, ...]
    kind: str = "mapping_index"
    #: CREATE INDEX CONCURRENTLY: outside a transaction, under an advisory lock (see `apply`).
    concurrent = True

    def identity(self) -> str:
        return f"{self.kind}:{self.schema}.{self.name}"

    def validity(self, cur: Any) -> bool | None:
        """Of the index by this step's name: valid, invalid (a build cut short), or absent."""
        return index_validity(cur, self.schema, self.name)

    def exists(self, cur: Any) -> bool:
        """Whether some unique index, of any name, on exactly these columns serves already."""
        cur.execute(_UNIQUE_KEYS, (regclass_text(self.schema, MAPPING_TABLE),))
        return sorted(self.columns) in [row[0] for row in cur.fetchall()]

    def forward(self) -> sql.Composed:
        # No IF NOT EXISTS: the name taken by anything else must fail, not pass for ours.
        return sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON {} ({})").format(
            sql.Identifier(self.name), self._table(), self._columns()
        )

    def inline(self) -> sql.Composed:
        """The same index inside the transaction that creates the (empty) table."""
        return sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
            sql.Identifier(self.name), self._table(), self._columns()
        )

    def describe(self) -> str:
        return f"unique index {self.name} on {MAPPING_TABLE}"

    def lock_key(self) -> int:
        """The advisory lock held while the index is built, or looked at by a rollback."""
        return zlib.crc32(f"uuid_migrate:index:{self.schema}.{self.name}".encode())

    def reverse(self) -> sql.Composed:
        return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            qualified(self.schema, self.name)
        )

    def conflicts(self, cur: Any) -> list[str]:
        """Why the index cannot be built on the id_mappings there: its name is taken, or
        the rows hold duplicates. Nothing when the table is absent or an index serves."""
        if not _has_columns(cur, self.schema, self.columns) or self.exists(cur):
            return []
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (regclass_text(self.schema, self.name),))
        if cur.fetchone()[0]:
            return [
                f"{self.schema}.{self.name} exists but is not a unique index on "
                f"{MAPPING_TABLE} ({', '.join(self.columns)}); rename it, or make it one"
            ]
        found = self._duplicates(cur)
        if not found:
            return []
        groups, shown = found
        return [
            f"{self.schema}.{MAPPING_TABLE} holds {groups} duplicated ({', '.join(self.columns)}), "
            f"so the unique index the migration needs cannot be built: {shown}; "
            "remove the duplicates first"
        ]

    def _duplicates(self, cur: Any) -> tuple[int, str] | None:
        """(how many values occur more than once, the first few with their counts)."""
        cols = self._columns()
        cur.execute(
            sql.SQL(
                "SELECT count(*) OVER (), row({cols})::text, count(*) FROM {t} WHERE {present} "
                "GROUP BY {cols} HAVING count(*) > 1 ORDER BY count(*) DESC, 2 LIMIT %s"
            ).format(
                cols=cols,
                t=self._table(),
                present=sql.SQL(" AND ").join(
                    sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in self.columns
                ),
            ),
            (DUPLICATES_SHOWN,),
        )
        rows = cur.fetchall()
        if not rows:
            return None
        shown = ", ".join(f"{value} {count} times" for _, value, count in rows)
        return int(rows[0][0]), shown + (", ..." if rows[0][0] > len(rows) else "")

    def _table(self) -> sql.Composed:
        return qualified(self.schema, MAPPING_TABLE)

    def _columns(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)


def mapping_indexes(schema: str) -> list[MappingIndex]:
    return [MappingIndex(schema, name, columns) for name, columns in MAPPING_INDEXES]


def _has_columns(cur: Any, schema: str, columns: tuple[str, ...]) -> bool:
    cur.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname = ANY(%s) AND NOT attisdropped",
        (regclass_text(schema, MAPPING_TABLE), list(columns)),
    )
    return cur.fetchone()[0] == len(columns)
