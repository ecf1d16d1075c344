"""A real Flower (`uuid-migrate flower`) watching a real run, read through its HTTP API."""

from __future__ import annotations

import ast
import io
import json
from dataclasses import replace

import pytest

from config.settings import load_settings
from devtools import sample
from producer import commands
from uuid_migrate.errors import ConfigError
from uuid_migrate.ledger.states import RunStatus

from .helpers import rows
from .watch import (
    cli_server,
    free_port,
    http_get,
    secret_password,
    server_ready,
    wait_for,
    with_password,
)

pytestmark = pytest.mark.e2e

SIZE = sample.SampleSize.for_users(300)


def flower_env(settings, database_url: str, basic_auth: str | None) -> dict[str, str | None]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.redis_url,
        "BROKER_URL": settings.broker_url,
        "UUID_MIGRATE_QUEUE": settings.queue,
        "FLOWER_BASIC_AUTH": basic_auth,
        "FLOWER_UNAUTHENTICATED_API": None,
    }


def our_tasks(base: str, auth: tuple[str, str], run_id: str) -> dict[str, dict]:
    status, body = http_get(f"{base}/api/tasks?limit=100000", auth)
    assert status == 200, body
    return {uid: t for uid, t in json.loads(body).items() if run_id in (t.get("args") or "")}


def test_flower_shows_every_batch_with_its_table_and_final_state_and_never_the_password(
    conn, settings, start_workers, tmp_path
):
    with conn.cursor() as cur:
        sample.build(cur, SIZE)
    password = secret_password()
    secret_settings = replace(settings, database_url=with_password(settings.database_url, password))
    auth = ("watcher", secret_password())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "flower.log"
    env = flower_env(settings, secret_settings.database_url, ":".join(auth))

    with cli_server(["flower", "--port", str(port)], env, log) as flower:
        wait_for(server_ready(flower, f"{base}/healthcheck", log), "Flower to answer")
        workers = start_workers(2, database_url=secret_settings.database_url)

        # Events from the workers prove Flower's event stream is connected before work starts.
        def workers_seen() -> bool:
            status, body = http_get(f"{base}/api/workers?status=true", auth)
            alive = json.loads(body) if status == 200 else {}
            return all(
                any(name.startswith(p) and up for name, up in alive.items())
                for p in workers.node_prefixes()
            )

        wait_for(workers_seen, "both workers in Flower's /api/workers")
        result = commands.run(secret_settings, plan_file="clinic", out=io.StringIO(), wait=True)
        assert result.status == RunStatus.SUCCEEDED

        planned = {
            (stage, no)
            for stage, no in rows(conn, "SELECT stage, batch_no FROM uuid_migration.batches")
        }

        def all_batches_final() -> dict | None:
            tasks = our_tasks(base, auth, result.run_id)
            batches = [t for t in tasks.values() if t["name"] == "uuid_migrate.batch"]
            validations = [t for t in tasks.values() if t["name"] == "uuid_migrate.validate"]
            done = len(batches) == len(planned) and all(t["state"] == "SUCCESS" for t in batches)
            return tasks if done and validations and validations[0]["state"] == "SUCCESS" else None

        tasks = wait_for(all_batches_final, "every batch task SUCCESS in Flower's /api/tasks")

        wrong = http_get(f"{base}/api/tasks", (auth[0], "wrong-password"))
        anonymous = http_get(f"{base}/api/workers")
        flower_metrics = http_get(f"{base}/metrics")

    batches = [t for t in tasks.values() if t["name"] == "uuid_migrate.batch"]
    seen = set()
    for task in batches:
        run_id, stage, batch_no = ast.literal_eval(task["args"])
        kwargs = ast.literal_eval(task["kwargs"])
        assert run_id == result.run_id and kwargs["table"] == stage.split(":")[0]
        assert kwargs["key_range"].startswith("(") and kwargs["key_range"].endswith("]")
        assert task["worker"].startswith("uuid-migrate-")
        seen.add((stage, batch_no))
    assert seen == planned
    assert {t["name"] for t in tasks.values()} >= {
        "uuid_migrate.page_done",
        "uuid_migrate.validate",
    }

    assert wrong[0] == 401 and anonymous[0] == 401
    assert flower_metrics[0] == 200 and "flower_events_total" in flower_metrics[1]
    assert password not in json.dumps(tasks)
    assert password not in log.read_text()
    for worker_log in tmp_path.glob("worker-*.log"):
        assert password not in worker_log.read_text()


def test_without_basic_auth_flower_keeps_its_api_closed(settings, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "flower.log"
    env = flower_env(settings, settings.database_url, None)

    with cli_server(["flower", "--port", str(port)], env, log) as flower:
        wait_for(server_ready(flower, f"{base}/healthcheck", log), "Flower to answer")
        api = http_get(f"{base}/api/tasks")

    assert api[0] == 401 and "FLOWER_UNAUTHENTICATED_API" in api[1]
    assert "FLOWER_BASIC_AUTH is not set" in log.read_text()


def test_flower_refuses_to_listen_beyond_this_machine_without_basic_auth(settings, tmp_path):
    log = tmp_path / "flower.log"
    env = flower_env(settings, settings.database_url, None)

    with cli_server(["flower", "--address", "0.0.0.0"], env, log) as flower:
        code = flower.wait(timeout=60)

    assert code == 2
    assert "refusing to serve Flower on 0.0.0.0 without FLOWER_BASIC_AUTH" in log.read_text()


def test_flower_basic_auth_must_be_user_and_password_and_is_never_shown():
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH must be user:password") as error:
        load_settings({"FLOWER_BASIC_AUTH": "admin-without-password"})
    assert "admin-without-password" not in str(error.value)
    settings = load_settings({"FLOWER_BASIC_AUTH": "admin:hunter2"})
    assert settings.flower_basic_auth == "admin:hunter2" and "hunter2" not in repr(settings)
