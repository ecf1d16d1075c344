"""Helpers for the tests that watch a run from outside: servers, HTTP, secrets to look for."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Generous: two other engineers' suites share the machine's two cores.
DEADLINE_S = 90


def secret_password() -> str:
    return f"S3cret{secrets.token_hex(6)}Pw"


def with_password(url: str, password: str) -> str:
    """The URL with a password; PostgreSQL here trusts local users, so it still connects."""
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_for(probe: Callable[[], T | None], what: str, deadline_s: float = DEADLINE_S) -> T:
    """Poll until `probe()` returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            value = probe()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.5)


@contextmanager
def cli_server(
    args: list[str], env: dict[str, str | None], log: Path
) -> Iterator[subprocess.Popen]:
    """`uuid-migrate ARGS` as a real process, logging to `log`; stopped with SIGTERM after.
    An `env` value of None removes that variable."""
    environment = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", *args],
            env=environment,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_ready(proc: subprocess.Popen, url: str, log: Path) -> Callable[[], Any]:
    """A probe for wait_for: the server answers `url`; fails at once if the process died."""

    def probe() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        return http_get(url)[0] in (200, 401)

    return probe
