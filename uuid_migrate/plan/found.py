"""Tables as the catalog shows them, and the scope of one discovery: its schemas and the
plan's own schema, which decides how the plan names each table."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from uuid_migrate.identifiers import LEDGER_SCHEMA
from uuid_migrate.plan.model import Table, make_table

#: Key types we migrate: text, varchar and char (and domains over them).
STRING_TYPES = ("text", "varchar", "bpchar")
#: Schemas that are never the application's.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", LEDGER_SCHEMA)

#: (schema, table) as PostgreSQL names a table.
Where = tuple[str, str]


@dataclass(frozen=True)
class Found:
    """A table as the catalog shows it."""

    schema: str
    name: str
    kind: str
    is_partition: bool
    partition_of: str | None
    partition_of_schema: str | None
    key: tuple[str, ...]
    key_type: str | None
    key_base: str | None
    partition_key: tuple[str, ...] = ()
    extension: str | None = None

    @property
    def where(self) -> Where:
        return self.schema, self.name

    @property
    def string_key(self) -> bool:
        return len(self.key) == 1 and self.key_base in STRING_TYPES


@dataclass(frozen=True)
class Scope:
    """The schemas discovered, and the plan's own schema (the first, where `id_mappings` is)."""

    schemas: tuple[str, ...]
    home: str
    named: bool  # the user named them (`--schema`), rather than every user schema

    def label(self, where: Where) -> str:
        return where[1] if where[0] == self.home else f"{where[0]}.{where[1]}"

    def table(self, info: Found, **fields: Any) -> Table:
        return make_table(info.schema, info.name, self.home, **fields)

    def outside(self, schema: str) -> str:
        if not self.named:
            return f"this role may not use schema {schema} (it lacks USAGE on it)"
        listed = ",".join(self.schemas)
        hint = shlex.quote(f"{listed},{schema}")
        return f"schema {schema} is not among --schema {listed} (add it: --schema {hint})"


