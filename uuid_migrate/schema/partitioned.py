"""The `uuid_id` unique index of a partitioned table, built without blocking writes.

PostgreSQL builds no index concurrently on a partitioned table, and a unique index there must
hold the partition key. So each leaf partition gets its index concurrently, each partitioned
table of the tree an index `ON ONLY` itself (instant, invalid until complete), and each index
is then attached to its parent's: after the last attach the top index is valid. The
partitions are read from the catalog when the step is applied, so partitions added since the
plan was made are covered; a rerun after a crash builds only what is missing or invalid.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.plan.naming import fit

#: The short lock the `ON ONLY` index and the attaches take (a SHARE lock on the partitioned
#: table, for an instant) is waited for at most this long, then tried again (see `run_ddl`):
#: writers never queue long behind it.
BRIEF_LOCK_TIMEOUT_MS = 2000
#: Suffix of every index it builds, as `retrying.UUID_INDEX_SUFFIX` expects.
INDEX_SUFFIX = "_uuid_id_key"

_TREE = """
SELECT n.nspname, c.relname, pn.nspname, pc.relname, t.isleaf, t.level
FROM pg_partition_tree(to_regclass(%s)) t
JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class pc ON pc.oid = t.parentrelid
LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace
ORDER BY t.level DESC, n.nspname, c.relname
"""


@dataclass(frozen=True)
class _Node:
    """A table of the partition tree: the root, a partitioned partition, or a leaf."""

    schema: str
    name: str
    parent: tuple[str, str] | None
    leaf: bool
    level: int


def partition_index_name(schema: str, table: str, column: str) -> str:
    """`<partition>_<column>_key`, shortened with a hash within 63 bytes, always ending so."""
    return fit(table, f"_{column}_key", f"{schema}.{table}.{column}")


def index_validity(cur: Any, schema: str, name: str) -> bool | None:
    """True if present and valid, False if invalid, None if absent."""
    cur.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    row = cur.fetchone()
    return None if row is None else bool(row[0])


@dataclass(frozen=True)
class PartitionedUniqueIndex:
    """The unique index on (`uuid_id`, partition key) of a partitioned table and its tree."""

    schema: str
    table: str
    column: str
    name: str
    columns: tuple[str, ...] = ()
    kind: str = "partitioned_unique_index"
    #: Concurrent builds: outside a transaction, under an advisory lock (see `apply`).
    concurrent = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))  # a list when read back

    def identity(self) -> str:
        return f"{self.kind}:{self.schema}.{self.name}"

    def validity(self, cur: Any) -> bool | None:
        """The top index: valid once every partition's index is attached."""
        return index_validity(cur, self.schema, self.name)

    def exists(self, cur: Any) -> bool:
        return self.validity(cur) is not None

    def index_of(self, schema: str, table: str) -> str:
        if (schema, table) == (self.schema, self.table):
            return self.name
        return partition_index_name(schema, table, self.column)

    def tree(self, cur: Any) -> list[_Node]:
        """The table's partition tree from the catalog, deepest first."""
        cur.execute(_TREE, (regclass_text(self.schema, self.table),))
        return [
            _Node(s, n, (ps, pn) if pn else None, bool(leaf), int(level))
            for s, n, ps, pn, leaf, level in cur.fetchall()
        ]

    def forward(self, cur: Any) -> list[sql.Composed]:
        """The statements still needed, one by one on an autocommit connection: a leaf's
        invalid leftover dropped, each missing leaf index built concurrently, each partitioned
        table's index created ON ONLY, then every index attached to its parent's."""
        if self.validity(cur):
            return []
        nodes = self.tree(cur)
        keys = sql.SQL(", ").join(
            sql.Identifier(c) for c in dict.fromkeys((self.column, *self.columns))
        )
        out: list[sql.Composed] = []
        for node in (n for n in nodes if n.leaf and n.parent):
            index = self.index_of(node.schema, node.name)
            validity = index_validity(cur, node.schema, index)
            if validity is False:
                out.append(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                        qualified(node.schema, index)
                    )
                )
            if validity is not True:
                out.append(
                    sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
                        sql.Identifier(index), qualified(node.schema, node.name), keys
                    )
                )
        out.append(sql.SQL("SET lock_timeout = {}").format(sql.Literal(BRIEF_LOCK_TIMEOUT_MS)))
        for node in (n for n in nodes if not n.leaf):
            out.append(
                sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON ONLY {} ({})").format(
                    sql.Identifier(self.index_of(node.schema, node.name)),
                    qualified(node.schema, node.name),
                    keys,
                )
            )
        for node in (n for n in nodes if n.parent):
            parent = self.index_of(*node.parent)
            out.append(
                sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                    qualified(node.parent[0], parent),
                    qualified(node.schema, self.index_of(node.schema, node.name)),
                )
            )
        out.append(sql.SQL("SET lock_timeout = 0"))
        return out

    def describe(self) -> str:
        return (
            f"unique index {self.name} on {self.schema}.{self.table} "
            "(partitioned: built per partition)"
        )

    def lock_key(self) -> int:
        """The advisory lock held while the index is built, or looked at by a rollback."""
        return zlib.crc32(f"uuid_migrate:index:{self.schema}.{self.name}".encode())

    def leftovers(self, cur: Any) -> list[sql.Composed]:
        """What a failed build left (a partitioned table's indexes first, top down, then the
        leaves' unattached ones, concurrently), to drop: nothing invalid stays behind."""
        nodes = list(reversed(self.tree(cur)))
        out = []
        for node in sorted(nodes, key=lambda n: n.leaf):  # stable: top-down within each kind
            index = self.index_of(node.schema, node.name)
            if index_validity(cur, node.schema, index) is not None:
                drop = "DROP INDEX CONCURRENTLY IF EXISTS {}" if node.leaf else "DROP INDEX IF EXISTS {}"
                out.append(sql.SQL(drop).format(qualified(node.schema, index)))
        return out

    def reverse(self) -> sql.Composed:
        """A partitioned index is never dropped concurrently; dropping it drops the
        partitions' indexes attached to it."""
        return sql.SQL("DROP INDEX IF EXISTS {}").format(qualified(self.schema, self.name))
