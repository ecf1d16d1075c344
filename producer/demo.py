"""`uuid-migrate demo`: a clinic database of its own, migrated by local workers, then shown."""

from __future__ import annotations

import secrets
import sys
from dataclasses import replace
from typing import Any, TextIO

from psycopg2 import sql

from config.settings import Settings
from devtools import sample
from producer import commands, status_command
from uuid_migrate import db
from uuid_migrate.ledger import error_records
from uuid_migrate.ledger.states import RunStatus

DEMO_PREFIX = "uuid_migrate_demo_"


def create_database(server_url: str) -> str:
    """A new, uniquely named database on the server; never an existing one."""
    name = f"{DEMO_PREFIX}{secrets.token_hex(4)}"
    with db.connection(server_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(server_url: str, name: str) -> None:
    with db.connection(server_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def demo(
    settings: Settings, rows: int, workers: int = 2, keep: bool = False, out: TextIO = sys.stdout
) -> int:
    server = settings.require_database()
    name = create_database(server)
    url = db.with_database(server, name)
    out.write(f"demo database {name}: building the clinic schema with {rows:,} users\n")
    try:
        with db.connection(url) as conn, conn.cursor() as cur:
            sample.build(cur, sample.SampleSize.for_users(rows))
        demo_settings = replace(settings, database_url=url, queue=f"{settings.queue}.{name}")
        result = commands.run(demo_settings, plan_file="clinic", workers=workers, out=out)
        show_result(url, out)
        return 0 if result.status == RunStatus.SUCCEEDED else 1
    finally:
        if keep:
            out.write(f"kept database {name} ({db.mask_url(url)})\n")
        else:
            drop_database(server, name)


def show_result(url: str, out: TextIO) -> None:
    with db.connection(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT d.id, d.uuid_id, d.user_id, d.user_uuid_id, u.uuid_id = d.user_uuid_id "
            "FROM dashboards d LEFT JOIN users u ON u.id = d.user_id ORDER BY d.id LIMIT 3"
        )
        out.write("\nsample dashboards (id, uuid_id, user_id, user_uuid_id, matches user):\n")
        for row in cur.fetchall():
            out.write("  " + "  ".join(str(v) for v in row) + "\n")
        cur.execute("SELECT table_name, count(*) FROM id_mappings GROUP BY 1 ORDER BY 1")
        out.write("id_mappings: " + ", ".join(f"{t}={n:,}" for t, n in cur.fetchall()) + "\n")
        out.write(f"recorded errors (orphaned references): {error_records.count(cur)}\n")
    status = status_command.status_for_url(url)
    _show_report(status.get("validation"), out)


def _show_report(report: dict[str, Any] | None, out: TextIO) -> None:
    if not report:
        out.write("no validation report stored\n")
        return
    out.write(
        f"post-migration validation: {report['overallStatus']} "
        f"({report['summary']['passed']}/{report['summary']['totalChecks']} checks)\n"
    )
