"""The tool's triggers' cost per application write, for the online benchmark.

On a migrated database (its triggers installed), the same single-row statements are timed with
the triggers enabled and disabled, each round in one transaction rolled back afterwards, so
every round writes the very same rows into the very same tables. Commits are left out: the
trigger's work is all in the statement, and a commit's flush would only add noise.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from uuid_migrate import db

STATEMENTS = 2000  # per kind, per round
ROUNDS = 3  # each round times both, alternately; the median round is kept
TRIGGERS = (("users", "zz_uuid_migrate_insert"), ("users", "zz_uuid_migrate_update"),
            ("dashboards", "zz_uuid_migrate_insert"), ("dashboards", "zz_uuid_migrate_update"))  # fmt: skip
KINDS = {
    "insert a user": "INSERT INTO users (id, email) VALUES (%s, 'cost@example.com')",
    "insert a dashboard": "INSERT INTO dashboards (id, user_id, title) VALUES (%s, %s, 'cost')",
    "move a dashboard to another user": "UPDATE dashboards SET user_id = %s WHERE id = %s",
}


def _arguments(cur: Any) -> dict[str, list[tuple[str, ...]]]:
    cur.execute("SELECT id FROM users ORDER BY md5(id) LIMIT %s", (STATEMENTS,))
    users = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT id FROM dashboards ORDER BY md5(id) LIMIT %s", (STATEMENTS,))
    dashboards = [r[0] for r in cur.fetchall()]
    return {
        "insert a user": [(f"usr_cost_{i}",) for i in range(STATEMENTS)],
        "insert a dashboard": [(f"dsh_cost_{i}", users[i]) for i in range(STATEMENTS)],
        "move a dashboard to another user": [
            (users[-1 - i], dashboards[i]) for i in range(STATEMENTS)
        ],
    }


def _round(conn: Any, arguments: dict[str, list[tuple[str, ...]]], triggers: bool) -> dict[str, float]:
    """Microseconds per statement of each kind, in one transaction rolled back."""
    per_op = {}
    try:
        with conn.cursor() as cur:
            for table, trigger in TRIGGERS if not triggers else ():
                cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
            for kind, statement in KINDS.items():
                started = time.perf_counter()
                for args in arguments[kind]:
                    cur.execute(statement, args)
                per_op[kind] = (time.perf_counter() - started) / STATEMENTS * 1e6
    finally:
        conn.rollback()
    return per_op


def cost(url: str) -> dict[str, tuple[float, float]]:
    """Per kind: (µs without the triggers, µs with them), the median of ROUNDS rounds."""
    with db.connection(url) as conn:
        with conn.cursor() as cur:
            arguments = _arguments(cur)
        conn.rollback()
        rounds: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for n in range(ROUNDS):
            for triggers in (bool(n % 2), not n % 2):  # alternate which goes first
                rounds[triggers].append(_round(conn, arguments, triggers))
    return {
        kind: (statistics.median(r[kind] for r in rounds[False]),
               statistics.median(r[kind] for r in rounds[True]))
        for kind in KINDS
    }  # fmt: skip


def render(costs: dict[str, tuple[float, float]]) -> str:
    lines = [
        f"The triggers' cost per application write ({STATEMENTS:,} single-row statements of "
        f"each kind in one transaction, rolled back; median of {ROUNDS} rounds; the same rows "
        "with the tool's triggers disabled and enabled, on the migrated copy):", "",
        "| statement | without triggers µs | with triggers µs | cost µs |",
        "|---|--:|--:|--:|",
    ]  # fmt: skip
    for kind, (without, with_) in costs.items():
        lines.append(f"| {kind} | {without:.0f} | {with_:.0f} | {with_ - without:+.0f} |")
    return "\n".join(lines)
