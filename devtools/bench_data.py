"""The benchmark's databases: a pristine one per size, file copies of it per method, and the
check that a method's result is right."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg2 import sql

from devtools import sample
from uuid_migrate import db

TABLES = ("users", "clinics", "dashboards", "providers")


def size_for(users: int) -> sample.SampleSize:
    """The issue's proportions: per user 0.1 clinic, 2 dashboards, 0.3 providers."""
    return sample.SampleSize.for_users(users)


def counts_of(size: sample.SampleSize) -> dict[str, int]:
    return {t: getattr(size, t) for t in TABLES}


@contextmanager
def scratch_db(server: str, name: str, template: str | None = None) -> Iterator[str]:
    """A new database (a file copy of `template` if given), dropped on exit; yields its URL."""
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with db.connection(server, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(create)
    try:
        yield db.with_database(server, name)
    finally:
        with db.connection(server, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(drop)


@contextmanager
def pristine(server: str, size: sample.SampleSize) -> Iterator[tuple[str, float]]:
    """A database with the sample at `size`, vacuumed; yields its name and build seconds."""
    name = f"uuid_migrate_bench_{secrets.token_hex(4)}"
    with scratch_db(server, name) as url:
        started = time.perf_counter()
        with db.connection(url) as conn, conn.cursor() as cur:
            sample.build(cur, size)
        with db.connection(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        yield name, time.perf_counter() - started


def check(url: str, counts: dict[str, int], orphans: int) -> None:
    """Every row has a UUID, one mapping each, references translated but for the orphans."""
    with db.connection(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM id_mappings), "
            "(SELECT count(*) FROM users WHERE uuid_id IS NULL) "
            "+ (SELECT count(*) FROM clinics WHERE uuid_id IS NULL) "
            "+ (SELECT count(*) FROM dashboards WHERE uuid_id IS NULL) "
            "+ (SELECT count(*) FROM providers WHERE uuid_id IS NULL), "
            "(SELECT count(*) FROM dashboards d JOIN users u ON u.id = d.user_id "
            " WHERE d.user_uuid_id IS DISTINCT FROM u.uuid_id), "
            "(SELECT count(*) FROM providers WHERE clinic_id IS NOT NULL AND clinic_uuid_id IS NULL)"
        )
        mappings, missing, wrong, untranslated = cur.fetchone()
    if mappings != sum(counts.values()) or missing or wrong or untranslated != orphans:
        raise SystemExit(
            f"bench: wrong result in {db.mask_url(url)}: {mappings=} {missing=} {wrong=} "
            f"{untranslated=}"
        )
