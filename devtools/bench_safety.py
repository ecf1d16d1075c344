"""Timing the safety commands on the benchmark's data: validate in each phase, and rollback.

Run as the user runs them (the CLI in a subprocess), on the database method (c) migrated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

CLI = Path(sys.executable).with_name("uuid-migrate")


def timed(url: str, *args: str) -> tuple[float, str]:
    """Seconds the command took and its output; a failure stops the benchmark."""
    env = dict(os.environ, DATABASE_URL=url)
    started = time.perf_counter()
    proc = subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: uuid-migrate {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return elapsed, proc.stdout


def baseline(url: str) -> str:
    seconds, out = timed(url, "validate", "--plan", "clinic", "--json")
    return f"`uuid-migrate validate` before the migration (baseline, {_checks(out)}): {seconds:.1f} s"


def after_run(url: str) -> list[str]:
    """validate (post), rollback with its verification, validate (rolled back)."""
    post_s, post = timed(url, "validate", "--json")
    rollback_s, _ = timed(url, "rollback", "--yes")
    back_s, back = timed(url, "validate", "--json")
    return [
        f"`uuid-migrate validate` after the run (post, {_checks(post)}): {post_s:.1f} s",
        f"`uuid-migrate rollback --yes` (drops, then compares every table with its snapshot): "
        f"{rollback_s:.1f} s",
        f"`uuid-migrate validate` after the rollback (rolled_back, {_checks(back)}): {back_s:.1f} s",
    ]


def _checks(output: str) -> str:
    report = json.loads(output)
    return f"{report['summary']['totalChecks']} checks, {report['overallStatus']}"
