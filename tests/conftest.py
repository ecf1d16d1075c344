"""Fixtures that talk to real services: a fresh PostgreSQL database per test, real Redis,
and real Celery worker processes. A missing service fails the suite, saying which."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import replace

import psycopg2
import pytest
import redis
from kombu import Connection
from psycopg2 import sql

from config.settings import Settings, load_settings
from devtools import sample
from producer.local_workers import LocalWorkers
from uuid_migrate import db
from worker.dispatch import control_queue

from .helpers import SIZE


def _service_settings() -> Settings:
    settings = load_settings()
    if not settings.database_url:
        pytest.fail("DATABASE_URL is not set: run the suite with `make test`", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def server_settings() -> Settings:
    settings = _service_settings()
    try:
        db.connect(settings.database_url, autocommit=True).close()
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable: {exc}", pytrace=False)
    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {settings.redis_url}: {exc}", pytrace=False)
    return settings


@pytest.fixture
def database_url(server_settings: Settings) -> Iterator[str]:
    """A new database with a unique name, dropped afterwards."""
    server = server_settings.database_url
    name = f"uuidm_test_{secrets.token_hex(5)}"
    with db.connection(server, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield db.with_database(server, name)
    with db.connection(server, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def settings(server_settings: Settings, database_url: str) -> Settings:
    """Settings for the test database, with a queue of its own so no other test's workers
    (or leftovers of an earlier run) can take its tasks."""
    queue = f"uuidm_test.{database_url.rsplit('/', 1)[-1]}"
    return replace(server_settings, database_url=database_url, queue=queue, batch_size=50)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_settings(request, settings: Settings) -> Iterator[Settings]:
    """The test's settings with each broker in turn; Redis keeps results and checkpoints.

    RabbitMQ keeps a declared queue (and its exchange) forever, so the test's own (its batch
    queue, its control queue and their exchanges) are deleted afterwards: the shared server
    never piles up queues.
    """
    if request.param == "redis":
        yield settings
        return
    url = os.environ.get("RABBITMQ_URL")
    if not url:
        pytest.skip("RABBITMQ_URL is not set: no RabbitMQ to run the broker test against")
    try:
        with Connection(url, connect_timeout=5) as probe:
            probe.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"RabbitMQ is not reachable at {db.mask_url(url)}: {exc}", pytrace=False)
    yield replace(settings, broker_url=url)
    with Connection(url) as cleanup:
        channel = cleanup.default_channel
        # Passive declare: fails unless the run's tasks really went through RabbitMQ.
        for queue in (settings.queue, control_queue(settings.queue)):
            channel.queue_declare(queue, passive=True)
            channel.queue_delete(queue)
            channel.exchange_delete(queue)  # each has an exchange of its name


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    connection = db.connect(database_url, autocommit=True)
    yield connection
    connection.close()


@pytest.fixture
def clinic(conn):
    """The test database holding the migration guide's clinic schema with SIZE rows."""
    with conn.cursor() as cur:
        sample.build(cur, SIZE)
    return conn


@pytest.fixture
def redis_conn(server_settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(server_settings.redis_url, decode_responses=True)


@pytest.fixture
def start_workers(settings: Settings, tmp_path) -> Iterator:
    """Start real Celery worker processes on demand; all are stopped after the test."""
    started: list[LocalWorkers] = []

    def start(count: int = 2, **overrides) -> LocalWorkers:
        workers = LocalWorkers(replace(settings, **overrides), count, tmp_path).start()
        started.append(workers)
        return workers

    yield start
    for workers in started:
        workers.stop()


def pytest_report_header() -> list[str]:
    settings = load_settings()
    return [
        f"database: {db.mask_url(settings.database_url or '<unset>')}",
        f"redis: {db.mask_url(settings.redis_url)}",
        f"rabbitmq: {db.mask_url(os.environ.get('RABBITMQ_URL') or '<unset>')}",
    ]
