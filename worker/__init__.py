"""Celery workers: `celery -A worker worker` finds the app here.

The app is built on first access, so importing `worker.dispatch` (as the producer does)
neither reads the environment nor fails on a bad setting before the CLI can report it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.celery_app import app

        return app
    raise AttributeError(name)
