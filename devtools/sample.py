"""The migration guide's clinic schema with generated data, for the demo, the tests and the benchmark.

Ids are `<prefix>_` + md5(n), so their sort order has nothing to do with insertion order.
A few providers point at clinics that do not exist (orphans) and some dashboards have no user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_SQL = """
CREATE TABLE users (
    id text PRIMARY KEY,
    email text NOT NULL,
    name text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE clinics (
    id text PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE dashboards (
    id text PRIMARY KEY,
    user_id text REFERENCES users (id),
    title text NOT NULL
);
CREATE TABLE providers (
    id text PRIMARY KEY,
    clinic_id text,
    name text NOT NULL
);
"""


@dataclass(frozen=True)
class SampleSize:
    """Row counts of the four tables; `orphans` providers reference missing clinics."""

    users: int
    clinics: int
    dashboards: int
    providers: int
    orphans: int

    @classmethod
    def for_users(cls, users: int) -> SampleSize:
        providers = max(users * 3 // 10, 5)
        return cls(users, max(users // 10, 1), users * 2, providers, max(providers // 1000, 3))


def create_schema(cur: Any) -> None:
    cur.execute(SCHEMA_SQL)


def fill(cur: Any, size: SampleSize) -> None:
    """Set-based inserts in random key order, then ANALYZE so plans are realistic."""
    cur.execute(
        "INSERT INTO users (id, email, name) SELECT 'usr_' || md5(i::text), "
        "'user' || i || '@example.com', 'User ' || i FROM generate_series(1, %s) i",
        (size.users,),
    )
    cur.execute(
        "INSERT INTO clinics (id, name) SELECT 'cln_' || md5(i::text), 'Clinic ' || i "
        "FROM generate_series(1, %s) i",
        (size.clinics,),
    )
    cur.execute(
        "INSERT INTO dashboards (id, user_id, title) SELECT 'dsh_' || md5(i::text), "
        "CASE WHEN i %% 50 = 0 THEN NULL ELSE 'usr_' || md5((1 + i %% %s)::text) END, "
        "'Dashboard ' || i FROM generate_series(1, %s) i",
        (size.users, size.dashboards),
    )
    cur.execute(
        "INSERT INTO providers (id, clinic_id, name) SELECT 'prv_' || md5(i::text), "
        "CASE WHEN i <= %s THEN 'cln_missing_' || i ELSE 'cln_' || md5((1 + i %% %s)::text) END, "
        "'Provider ' || i FROM generate_series(1, %s) i",
        (size.orphans, size.clinics, size.providers),
    )
    cur.execute("ANALYZE users, clinics, dashboards, providers")


def build(cur: Any, size: SampleSize) -> None:
    create_schema(cur)
    fill(cur, size)
