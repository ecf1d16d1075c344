"""Names the migration derives: `<ref>_uuid_id` columns, within PostgreSQL's 63 bytes.

PostgreSQL truncates a longer identifier silently, which could make two names collide, so a
derived name that would pass the limit keeps a readable prefix and gains a short hash of the
full name; two derived names that would collide are told apart the same way. The same input
always gives the same name, so a plan and its resumed run agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace

#: PostgreSQL's limit on an identifier.
MAX_IDENTIFIER_BYTES = 63
_SUFFIX = "_uuid_id"


def reference_uuid_column(column: str) -> str:
    """`user_id` -> `user_uuid_id`; a column without `_id` just gains the suffix; a name that
    would pass 63 bytes is shortened with a hash."""
    base = column[:-3] if column.lower().endswith("_id") and len(column) > 3 else column
    return fit(base, _SUFFIX, column)


def fit(base: str, suffix: str, source: str) -> str:
    """`base + suffix`, or, past 63 bytes, a prefix of `base`, `_`, 8 hex digits of a hash of
    `source`, then `suffix`."""
    name = base + suffix
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(source.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode()) - len(digest) - 1
    prefix = base.encode()[:room].decode(errors="ignore")
    return f"{prefix}_{digest}{suffix}"


def distinct_reference_columns(relations: Iterable) -> list:
    """The relations with derived column names told apart per table: a name already taken
    (by another relation, or by an earlier one of the same name) gets the hash of its source
    column instead."""
    taken: dict[str, set[str]] = {}
    out = []
    for rel in relations:
        names = taken.setdefault(rel.table, set())
        name = rel.uuid_column
        if name in names:
            base = name.removesuffix(_SUFFIX)
            digest = hashlib.sha1(f"{rel.table}.{rel.column}".encode()).hexdigest()[:8]
            name = fit(f"{base}_{digest}", _SUFFIX, f"{rel.table}.{rel.column}")
            rel = replace(rel, uuid_column=name)
        names.add(name)
        out.append(rel)
    return out
