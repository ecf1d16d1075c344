"""Passwords in connection strings: masked in every form libpq accepts, never in any output
of a real command; every URL parameter reaches PostgreSQL as written."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote

import psycopg2
import pytest
from psycopg2 import sql

from uuid_migrate import db
from uuid_migrate.errors import ConfigError

from .helpers import rows, scalar
from .recovery_support import build_clinic, cli

#: Random, so that finding it anywhere (a shared Redis too) can only mean this test leaked it.
PASSWORD = f"p@ss:w/rd?x&y=z-{secrets.token_hex(4)}"
ENCODED = quote(PASSWORD, safe="")

#: Every form a password can take in a libpq connection string (and its masked text).
FORMS = {
    f"postgresql://app:{ENCODED}@db:5432/prod": "postgresql://app:***@db:5432/prod",
    f"postgres://app:{ENCODED}@db/prod?sslmode=require": "postgres://app:***@db/prod?sslmode=require",
    f"postgresql://app:{PASSWORD}@db:5432/prod": "postgresql://app:***@db:5432/prod",
    f"postgresql+psycopg2://app:{PASSWORD}@db/prod": "postgresql+psycopg2://app:***@db/prod",
    f"postgresql://:{ENCODED}@db/prod": "postgresql://:***@db/prod",
    f"postgresql://app@db/prod?password={ENCODED}&application_name=x": (
        "postgresql://app@db/prod?password=***&application_name=x"
    ),
    f"postgresql://app@db/prod?sslmode=disable&password={ENCODED}": (
        "postgresql://app@db/prod?sslmode=disable&password=***"
    ),
    f"postgresql://app@db/prod?sslpassword={ENCODED}": "postgresql://app@db/prod?sslpassword=***",
    f"postgresql://app:one@db/prod?password={ENCODED}": "postgresql://app:***@db/prod?password=***",
    f"host=db user=app password={ENCODED} dbname=prod": "host=db user=app password=*** dbname=prod",
    "host=db password='p@ss w\\'o rd' dbname=prod": "host=db password=*** dbname=prod",
    "redis://:s3cr@t:/x@cache:6379/0": "redis://:***@cache:6379/0",
    "amqp://guest:gu/e@st@mq:5672//": "amqp://guest:***@mq:5672//",
}


def _leaks(text: str, *more: str) -> list[str]:
    return [p for p in (PASSWORD, ENCODED, *more) if p in text]


@pytest.mark.parametrize("url", FORMS)
def test_every_form_of_password_is_masked_alone_and_in_free_text(url):
    assert db.mask_url(url) == FORMS[url]
    assert db.mask_secrets(f"cannot reach {url} now") == f"cannot reach {FORMS[url]} now"
    pieces = ("s3cr@t", "gu/e@st", "p@ss w", "o rd")
    assert _leaks(db.mask_secrets(f'error: "{url}", retrying'), *pieces) == []


def test_urls_without_a_password_are_left_as_they_are():
    for url in (
        "postgresql://app@db/prod",
        "postgresql://db:5432/prod?application_name=a@b&options=-c%20x%3D1",
        "postgresql:///prod?host=/var/run/postgresql",
        "redis://cache:6379/0",
    ):
        assert db.mask_url(url) == url and db.mask_secrets(url) == url


def test_a_raw_at_or_slash_in_the_password_is_refused_without_showing_it():
    for url in (
        f"postgresql://app:{PASSWORD}@127.0.0.1:5432/prod",
        "postgresql://app:pa/zzqq@127.0.0.1/prod",
        "postgresql://app:pa@zzqq@127.0.0.1/prod",
    ):
        with pytest.raises(ConfigError, match="write '@' as %40") as refused:
            db.libpq_url(url)
        assert "zzqq" not in str(refused.value) and _leaks(str(refused.value)) == []


def test_libpqs_own_parse_errors_never_quote_the_password():
    with pytest.raises(ConfigError, match="percent-encoded") as bad:
        db.libpq_url("postgresql://app:hunter2%zz@db/prod")
    assert "hunter2" not in str(bad.value)
    with pytest.raises(ConfigError, match="postgresql://") as other:
        db.libpq_url(f"host=db password={PASSWORD}")
    assert _leaks(str(other.value)) == []


def test_urls_go_to_libpq_as_written_and_with_database_keeps_the_parameters():
    url = "postgres://app:p%40ss@db:5/old?options=-c%20statement_timeout%3D5&sslmode=disable"
    assert db.libpq_url(url) == url
    assert db.libpq_url(url.replace("postgres://", "postgresql+psycopg2://")) == url.replace(
        "postgres://", "postgresql://"
    )
    assert db.with_database(url, "new db") == url.replace("/old?", "/new%20db?")
    assert db.with_database("postgresql://db", "x") == "postgresql://db/x"
    assert db.database_name(url) == "old"


def test_every_url_parameter_reaches_postgresql_unchanged(server_settings, database_url):
    url = f"{database_url}?options=-c%20statement_timeout%3D12345&application_name=xyz"
    url += "&sslmode=disable&target_session_attrs=any&connect_timeout=5"
    conn = db.connect(url)
    try:
        assert scalar(conn, "SHOW statement_timeout") == "12345ms"
        assert scalar(conn, "SHOW application_name") == "xyz"
        assert scalar(conn, "SELECT current_database()") == database_url.rsplit("/", 1)[-1]
    finally:
        conn.close()
    plain = db.connect(database_url)  # without one in the URL, ours names the session
    try:
        assert scalar(plain, "SHOW application_name") == db.APPLICATION_NAME
    finally:
        plain.close()


@pytest.fixture
def role_url(server_settings, database_url) -> Iterator[str]:
    """A superuser role whose password holds `@`, `:`, `/` (and more), in the test's database
    URL, percent-encoded as libpq wants it (the server trusts, so it connects)."""
    role = f"uuidm_pw_{secrets.token_hex(4)}"
    with db.connection(server_settings.database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(PASSWORD)
            )
        )
    host = database_url.split("@", 1)[1]
    yield f"postgresql://{role}:{ENCODED}@{host}"
    with db.connection(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
        cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with db.connection(server_settings.database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_failing_command_never_shows_the_password_in_any_form(settings, role_url):
    server, _, _ = role_url.rpartition("/")
    user = role_url.split("//", 1)[1].split(":", 1)[0]
    urls = [
        f"{server}/no_such_database",  # the server answers: no such database
        re.sub(r":\d+/", ":1/", role_url, count=1),  # nobody listens
        f"{server.replace(f':{ENCODED}', '')}/no_such_database?password={ENCODED}",
        f"postgresql://{user}:{PASSWORD}@{server.split('@', 1)[1]}/x",  # not encoded at all
        f"postgresql://{user}:{ENCODED}%zz@127.0.0.1/x",  # libpq cannot read it
    ]
    for url in urls:
        for command in (("status",), ("run", "--workers", "1", "--wait"), ("rollback", "--yes")):
            result = cli(replace(settings, database_url=url), *command, timeout=60)
            assert result.returncode == 2, (url, result.stdout, result.stderr)
            assert result.stderr.count("\n") == 1, result.stderr
            assert _leaks(result.stdout + result.stderr) == [], (url, result.stderr)


def _redis_text(redis_conn) -> str:
    """Every key and value in the Redis database, as text."""
    out = []
    for key in redis_conn.scan_iter(count=1000):
        kind = redis_conn.type(key)
        value = {
            "string": lambda k: redis_conn.get(k),
            "hash": lambda k: redis_conn.hgetall(k),
            "list": lambda k: redis_conn.lrange(k, 0, -1),
            "set": lambda k: redis_conn.smembers(k),
            "zset": lambda k: redis_conn.zrange(k, 0, -1, withscores=True),
        }.get(kind, lambda k: None)(key)
        out.append(f"{key} {value}")
    return "\n".join(out)


def _ledger_text(conn) -> str:
    tables = rows(
        conn,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'uuid_migration' ORDER BY 1",
    )
    out = []
    for (table,) in tables:
        query = sql.SQL("SELECT t::text FROM uuid_migration.{} t").format(sql.Identifier(table))
        out += [row[0] for row in rows(conn, query.as_string(conn))]
    assert len(tables) >= 5 and out, "the ledger was written"
    return "\n".join(out)


@pytest.mark.e2e
def test_a_whole_run_never_writes_the_password_anywhere(
    conn, settings, role_url, redis_conn, tmp_path
):
    build_clinic(conn)
    as_role = replace(settings, database_url=role_url)
    logs = tmp_path / "logs"
    run = cli(as_role, "run", "--plan", "clinic", "--workers", "2", "--wait", "--worker-logs", str(logs))
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    status = cli(as_role, "status", "--json")
    assert json.loads(status.stdout)["status"] == "succeeded"
    validate = cli(as_role, "validate", "--json")
    assert validate.returncode == 0

    worker_logs = "".join(p.read_text() for p in logs.glob("worker-*.log"))
    assert "succeeded" in worker_logs
    outputs = {
        "run": run.stdout + run.stderr,
        "status": status.stdout + status.stderr,
        "validate": validate.stdout + validate.stderr,
        "worker logs": worker_logs,
        "redis": _redis_text(redis_conn),
        "ledger": _ledger_text(conn),
    }
    leaked = {name: found for name, text in outputs.items() if (found := _leaks(text))}
    assert leaked == {}
    with pytest.raises(psycopg2.Error):
        psycopg2.connect(role_url.replace(ENCODED, PASSWORD))  # as written raw, libpq misreads it
