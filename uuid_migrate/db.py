"""Connections to PostgreSQL: URL checking, masking, and errors the CLI can print."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from uuid_migrate.errors import ConfigError, ConnectionFailed

#: Shown by PostgreSQL in pg_stat_activity, so a DBA can tell our sessions apart.
APPLICATION_NAME = "uuid-migrate"


def libpq_url(url: str) -> str:
    """Check a database URL and return it in the form libpq accepts (no `+driver`)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL is not a valid URL: {mask_url(url)}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"DATABASE_URL must be a postgresql:// URL, got {parsed.drivername}://")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def mask_url(url: str) -> str:
    """The URL with its password replaced, safe for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_secrets(text: str) -> str:
    """Any `scheme://user:password@` in free text, with the password replaced."""
    return _CREDENTIALS.sub(r"\1***@", text)


def database_name(url: str) -> str:
    return make_url(url).database or ""


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def connect(url: str, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    """Open a connection or raise ConnectionFailed with a one-line, password-free reason."""
    dsn = libpq_url(url)
    try:
        conn = psycopg2.connect(dsn, application_name=APPLICATION_NAME, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection refused"
        raise ConnectionFailed(
            f"cannot connect to PostgreSQL at {mask_url(url)}: {reason}"
        ) from None
    _session_defaults(conn)
    conn.autocommit = autocommit
    return conn


def _session_defaults(conn: psycopg2.extensions.connection) -> None:
    """Row-level security off for the whole session: a policy that would hide rows from the
    tool then raises instead of silently leaving them unmigrated (or unchecked)."""
    conn.autocommit = True  # a SET inside a transaction that rolls back would be undone
    with conn.cursor() as cur:
        cur.execute("SET row_security = off")


def can_set_replication_role(cur: Any) -> bool:
    """Whether this session may set `session_replication_role` (a superuser, or from
    PostgreSQL 15 a role granted SET on it), which keeps user triggers off the tool's writes."""
    cur.execute("SELECT current_setting('is_superuser') = 'on', current_setting('server_version_num')::int")
    superuser, version = cur.fetchone()
    if superuser or version < 150000:
        return bool(superuser)
    cur.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
    return bool(cur.fetchone()[0])


@contextmanager
def connection(url: str, *, autocommit: bool = False) -> Iterator[psycopg2.extensions.connection]:
    """A connection that is closed on exit; commits on success when not autocommit."""
    conn = connect(url, autocommit=autocommit)
    try:
        yield conn
        if not autocommit:
            conn.commit()
    except BaseException:
        if not conn.closed and not autocommit:
            conn.rollback()
        raise
    finally:
        conn.close()
