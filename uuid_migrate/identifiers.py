"""Names of database objects as SQL: the one place a schema-qualified name is built.

Every identifier reaches SQL through `psycopg2.sql.Identifier`, so names with quotes, dots,
capitals or spaces work and can never inject SQL.
"""

from __future__ import annotations

from psycopg2 import sql

#: The ledger's own schema, so it never mixes with the application's tables.
LEDGER_SCHEMA = "uuid_migration"


def qualified(schema: str, name: str) -> sql.Composed:
    """`schema.name`, each part quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def regclass_text(schema: str, name: str) -> str:
    """A quoted name for `to_regclass`, safe for names with quotes, dots or capitals."""
    return '"{}"."{}"'.format(schema.replace('"', '""'), name.replace('"', '""'))
