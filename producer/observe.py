"""Watching a run: Flower against the configured broker, and the Prometheus exporter.

Both run in this process, so the logging set up by the CLI (masked, text or JSON) covers
them, and no secret is ever put on a command line where `ps` would show it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from prometheus_client import CollectorRegistry, start_http_server

from config.settings import Settings
from producer.arguments import DEFAULT_ADDRESS, DEFAULT_FLOWER_PORT, DEFAULT_METRICS_PORT
from producer.metrics_exporter import LedgerCollector
from uuid_migrate.errors import ConfigError

log = logging.getLogger("uuid_migrate.observe")

#: Flower's task list shows the arguments: run, stage (table), batch number and key range.
FLOWER_TASK_COLUMNS = "name,args,kwargs,state,runtime,worker"


def flower_arguments(settings: Settings, address: str, port: int) -> list[str]:
    """Arguments of `celery` for Flower on the workers' app; refuses an open public Flower."""
    if not settings.flower_basic_auth and not is_loopback(address):
        raise ConfigError(
            f"refusing to serve Flower on {address} without FLOWER_BASIC_AUTH=user:password"
        )
    args = ["--app", "worker", "flower", f"--address={address}", f"--port={port}"]
    args.append(f"--tasks_columns={FLOWER_TASK_COLUMNS}")
    # Our workers start with events on. Flower's own periodic `enable_events` broadcast would
    # also switch them on in an application's workers sharing the broker: not ours to do.
    args.append("--enable_events=false")
    if settings.flower_basic_auth:
        args.append(f"--basic_auth={settings.flower_basic_auth}")
    return args


def flower(
    settings: Settings, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_FLOWER_PORT
) -> int:
    """Serve Flower until interrupted. Without basic auth its API stays closed (Flower's default)."""
    from celery.bin.celery import celery as celery_command

    args = flower_arguments(settings, address, port)
    if not settings.flower_basic_auth:
        log.warning(
            "FLOWER_BASIC_AUTH is not set: Flower's pages are open to anyone reaching %s:%s "
            "and its HTTP API is closed",
            address,
            port,
        )
    # In this process, not `exec celery`: the password stays out of every process's argv.
    try:
        result = celery_command.main(args=args, prog_name="celery", standalone_mode=False)
    except OSError as exc:  # a busy port, an address that does not resolve
        raise ConfigError(f"cannot serve Flower on {address}:{port}: {exc.strerror or exc}") from None
    return int(result or 0)


def serve_metrics(
    settings: Settings, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_METRICS_PORT
) -> int:
    """Serve /metrics until interrupted; each scrape reads the ledger."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(settings.require_database()))
    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from None
    log.info("serving Prometheus metrics on http://%s:%s/metrics", address, port)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)
    return 0


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
