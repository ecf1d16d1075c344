"""docker-compose.yml, checked by parsing (no Docker engine here): its shape and its commands."""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from producer.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command_words(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else shlex.split(command)


def test_compose_has_the_services_with_health_checks_and_a_shared_image():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "redis", "worker", "producer", "flower", "metrics"}
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert all(services[s]["build"] == "." for s in ("worker", "producer", "flower", "metrics"))
    assert (ROOT / "Dockerfile").exists()


def test_worker_scales_without_fixed_names_or_host_ports():
    worker = COMPOSE["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_worker_concurrency_and_queue_come_from_the_environment():
    words = command_words(COMPOSE["services"]["worker"])
    assert words[words.index("--concurrency") + 1].startswith("${WORKER_CONCURRENCY")
    assert words[words.index("--queues") + 1].startswith("${UUID_MIGRATE_QUEUE")
    assert "--events" in words


def test_flower_and_metrics_are_published_on_localhost_only():
    assert COMPOSE["services"]["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert COMPOSE["services"]["metrics"]["ports"] == ["127.0.0.1:9808:9808"]
    published = [s for s, spec in COMPOSE["services"].items() if "ports" in spec]
    assert sorted(published) == ["flower", "metrics"]


def test_flower_basic_auth_comes_from_the_env_file():
    assert "FLOWER_BASIC_AUTH=" in (ROOT / ".env.example").read_text()
    assert "FLOWER_BASIC_AUTH" not in COMPOSE["services"]["flower"].get("environment", {})
    assert COMPOSE["services"]["flower"]["env_file"] == ".env"


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its vendored compose-spec; a dead proxy proves it stays offline."""
    dead_proxy = "http://127.0.0.1:9"
    env = {**os.environ, "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy}
    env.update(http_proxy=dead_proxy, https_proxy=dead_proxy)
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_compose_file_follows_the_compose_specification():
    result = check_compose_schema(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_compose_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  worker:\n    build: .\n    ports: 5555\n")
    result = check_compose_schema(broken)
    assert result.returncode == 1 and "5555 is not of type" in result.stdout + result.stderr


def test_secrets_come_from_an_env_file_not_the_compose_file():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text and "PASSWORD: ${POSTGRES_PASSWORD:?" in text
    assert all(
        COMPOSE["services"][s]["env_file"] == ".env"
        for s in ("worker", "producer", "flower", "metrics")
    )


def test_every_command_names_a_real_module_or_console_script():
    scripts = (ROOT / "pyproject.toml").read_text()
    for name in ("worker", "producer", "flower", "metrics"):
        words = command_words(COMPOSE["services"][name])
        if words[0] == "celery":
            app = words[words.index("-A") + 1]
            assert importlib.import_module(app).app.main == "uuid_migrate"
        else:
            assert f'{words[0]} = "producer.cli:main"' in scripts
            assert build_parser().parse_args(words[1:]).command == words[1]
