"""The application's triggers and rules on a table the tool writes: which would fire on the
tool's own writes, with `session_replication_role` set to `replica` or not.

Every trigger of the table's partition tree is read by its own state: a partition's copy of
its parent's trigger can be enabled on its own (`ALTER TABLE part ENABLE ALWAYS TRIGGER`).
A rule fires like a trigger (ORIGIN, REPLICA, ALWAYS), and PostgreSQL refuses any rule on a
table a data-modifying WITH writes, which every batch is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uuid_migrate.schema.triggers import TRIGGER_NAMES

#: Trigger type bits (pg_trigger.tgtype) and rule events (pg_rewrite.ev_type) by event.
TRIGGER_EVENT = {"INSERT": 4, "DELETE": 8, "UPDATE": 16}
RULE_EVENT = {"UPDATE": "2", "INSERT": "3", "DELETE": "4"}
#: Enabled states that fire with the session's role `replica` (True) or `origin` (False).
FIRES = {True: ("A", "R"), False: ("O", "A")}

_TREE = "(SELECT relid FROM pg_partition_tree(to_regclass(%(t)s)) UNION SELECT to_regclass(%(t)s))"
_TRIGGERS = f"""
SELECT t.tgname, c.relname, c.oid = to_regclass(%(t)s), t.tgenabled, t.tgtype,
       ARRAY(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = t.tgrelid AND a.attnum = ANY(t.tgattr::int2[]))
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgrelid IN {_TREE}
ORDER BY c.oid <> to_regclass(%(t)s), c.relname, t.tgname
"""
_RULES = f"""
SELECT r.rulename, c.relname, c.oid = to_regclass(%(t)s), r.ev_enabled
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
WHERE r.rulename <> '_RETURN' AND r.ev_enabled <> 'D' AND r.ev_type = %(event)s
  AND r.ev_class IN {_TREE}
ORDER BY 2, 1
"""


@dataclass(frozen=True)
class Firing:
    """A trigger or rule of the table (or of one of its partitions) and whether it fires."""

    kind: str  # "trigger" or "rule"
    name: str
    partition: str | None  # the partition it is on, None for the table itself
    fires: bool

    def describe(self) -> str:
        where = f" on partition {self.partition}" if self.partition else ""
        return f"{self.kind} {self.name}{where}"


def on_writes(
    cur: Any, relation: str, event: str, written: set[str], silenced: bool
) -> list[Firing]:
    """The triggers and rules on `relation` (its `regclass` text) for `event`, each once per
    table and state; a trigger `UPDATE OF` none of the `written` columns is left out."""
    cur.execute(_TRIGGERS, {"t": relation})
    found: dict[tuple[str, bool], Firing] = {}
    for name, table, is_self, enabled, tgtype, columns in cur.fetchall():
        if name in TRIGGER_NAMES:
            continue  # the tool's own, which leave its batches alone
        if not tgtype & TRIGGER_EVENT[event] or (columns and not set(columns) & written):
            continue
        firing = Firing("trigger", name, None if is_self else table, enabled in FIRES[silenced])
        found.setdefault((name, firing.fires), firing)  # a partition's copy only if it differs
    cur.execute(_RULES, {"t": relation, "event": RULE_EVENT[event]})
    for name, table, is_self, enabled in cur.fetchall():
        firing = Firing("rule", name, None if is_self else table, enabled in FIRES[silenced])
        found.setdefault((f"rule:{name}:{table}", firing.fires), firing)
    return list(found.values())
