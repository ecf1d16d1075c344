"""docker-compose.yml, checked by parsing (no Docker engine here): its shape and its commands."""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command_words(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else shlex.split(command)


def test_compose_has_the_services_with_health_checks_and_a_shared_image():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "redis", "worker", "producer", "flower"}
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert all(services[s]["build"] == "." for s in ("worker", "producer", "flower"))
    assert (ROOT / "Dockerfile").exists()


def test_worker_scales_without_fixed_names_or_host_ports():
    worker = COMPOSE["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_flower_is_published_on_localhost_only():
    assert COMPOSE["services"]["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_secrets_come_from_an_env_file_not_the_compose_file():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text and "PASSWORD: ${POSTGRES_PASSWORD:?" in text
    assert all(COMPOSE["services"][s]["env_file"] == ".env" for s in ("worker", "producer"))


def test_every_command_names_a_real_module_or_console_script():
    scripts = (ROOT / "pyproject.toml").read_text()
    for name in ("worker", "producer", "flower"):
        words = command_words(COMPOSE["services"][name])
        if words[0] == "celery":
            app = words[words.index("-A") + 1]
            assert importlib.import_module(app).app.main == "uuid_migrate"
        else:
            assert f'{words[0]} = "producer.cli:main"' in scripts
