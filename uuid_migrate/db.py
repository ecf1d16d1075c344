"""Connections to PostgreSQL: URL checking, masking, and errors the CLI can print.

The URL goes to libpq as the user wrote it (libpq parses postgresql:// URIs itself), so every
parameter (`options`, `sslmode`, `target_session_attrs`, …) reaches PostgreSQL unchanged;
re-rendering it through another URL library would re-encode values libpq then misreads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import make_dsn, parse_dsn

from uuid_migrate.errors import ConfigError, ConnectionFailed

#: Shown by PostgreSQL in pg_stat_activity, so a DBA can tell our sessions apart.
APPLICATION_NAME = "uuid-migrate"
#: What a connection gets unless the URL says otherwise.
CONNECT_DEFAULTS = {"application_name": APPLICATION_NAME, "connect_timeout": "10"}
LIBPQ_SCHEMES = ("postgresql", "postgres")
MASK = "***"

_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: A secret in a URI's query string (`?password=…&…`).
_QUERY_SECRET = re.compile(r"(?i)([?&](?:ssl)?password)=[^&#\s]*")
#: A secret in libpq's key=value form (`password=… ` or `password='…'`), unless already masked.
_KEYWORD_SECRET = re.compile(
    r"(?i)\b((?:ssl)?password)\s*=\s*(?!\*\*\*(?:[\s&'\"]|$))('(?:[^'\\]|\\.)*'|\S+)"
)
#: An `@` followed by what a URI's host list can be (names, IPv6, ports, %-encoded socket
#: directories), up to the path, the query or the end.
_HOSTS_AFTER_AT = re.compile(r"@(?=[\w.~%\-:,\[\]]*(?:[/?]|$))")
#: Secrets shorter than this are not searched for in free text: they would match anywhere.
_MIN_REDACTED = 3


def libpq_url(url: str) -> str:
    """Check a database URL and return what libpq gets: the same URL, minus a `+driver`."""
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if not sep or base not in LIBPQ_SCHEMES:
        shown = f", got {scheme}://" if sep and _SCHEME.fullmatch(scheme) else ""
        raise ConfigError(f"DATABASE_URL must be a postgresql:// URL{shown}")
    userinfo = _userinfo(rest)
    if userinfo is not None and ("@" in userinfo or "/" in userinfo):
        # libpq ends the user info at the first `@` or `/`: it would take the rest of the
        # password for the host, the port or the database, and show it in its errors.
        raise ConfigError(
            "DATABASE_URL: write '@' as %40 and '/' as %2F in its user name, password and "
            "parameter values; the URL was not used"
        )
    dsn = f"{base}://{rest}"
    try:
        parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        reason = redact(_first_line(exc).removeprefix("invalid dsn: "), url)
        raise ConfigError(f"DATABASE_URL is not a valid URL ({reason}): {mask_url(url)}") from None
    return dsn


def mask_url(url: str) -> str:
    """The URL (or key=value string) with every password replaced, safe for logs and messages."""
    masked = _mask_uri(url) if "://" in url else url
    return _KEYWORD_SECRET.sub(rf"\1={MASK}", masked)


def mask_secrets(text: str) -> str:
    """Every password in free text replaced: of any `scheme://user:password@` (whatever it
    holds, percent-encoded or not), of `?password=…`, and of libpq's `password=…`."""
    masked = _URI.sub(lambda m: _mask_uri(m.group(0)), text)
    return _KEYWORD_SECRET.sub(rf"\1={MASK}", masked)


def redact(text: str, url: str) -> str:
    """`text` masked, and without any secret of `url`, encoded or not (libpq's parse errors
    quote the token they could not read, which may be the password)."""
    for secret in sorted(_secrets_of(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return mask_secrets(text)


def _mask_uri(uri: str) -> str:
    head, sep, rest = uri.partition("://")
    userinfo = _userinfo(rest)
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[len(userinfo):]}"
    return head + sep + _QUERY_SECRET.sub(rf"\1={MASK}", rest)


def _userinfo(rest: str) -> str | None:
    """What precedes the `@` that ends a URI's user info: the last `@` followed by a host
    list, whatever precedes it (a password written raw may hold `@`, `:`, `/` or `?`)."""
    ends = [m.start() for m in _HOSTS_AFTER_AT.finditer(rest)]
    return rest[: ends[-1]] if ends else None


def _secrets_of(url: str) -> set[str]:
    found: set[str] = set()
    rest = url.partition("://")[2]
    userinfo = _userinfo(rest) or ""
    if ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    found.update(m.group(0).partition("=")[2] for m in _QUERY_SECRET.finditer(rest))
    found.update(m.group(2).strip("'") for m in _KEYWORD_SECRET.finditer(url))
    return {s for raw in found for s in (raw, unquote(raw)) if len(s) >= _MIN_REDACTED}


def database_name(url: str) -> str:
    return parse_dsn(libpq_url(url)).get("dbname", "")


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database; everything else kept as written."""
    dsn = libpq_url(url)
    scheme, _, rest = dsn.partition("://")
    # libpq's own split: the user info ends at an `@` met before any `/`.
    at = re.match(r"[^@/]*@", rest)
    host_end = re.compile(r"[/?]|$").search(rest, at.end() if at else 0).start()
    query = rest.find("?", host_end)
    tail = rest[query:] if query >= 0 else ""
    return f"{scheme}://{rest[:host_end]}/{quote(database, safe='')}{tail}"


def connect(url: str, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    """Open a connection or raise ConnectionFailed with a one-line, password-free reason."""
    dsn = libpq_url(url)
    given = parse_dsn(dsn)
    defaults = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
    try:
        conn = psycopg2.connect(make_dsn(dsn, **defaults) if defaults else dsn)
    except psycopg2.OperationalError as exc:
        reason = redact(_first_line(exc), url) or "connection refused"
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
    cur.execute(
        "SELECT current_setting('is_superuser') = 'on', "
        "current_setting('server_version_num')::int"
    )
    superuser, version = cur.fetchone()
    if superuser or version < 150000:
        return bool(superuser)
    cur.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
    return bool(cur.fetchone()[0])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


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
