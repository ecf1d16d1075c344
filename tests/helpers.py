"""Queries the end-to-end tests use to check a migrated database from the outside."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql


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
