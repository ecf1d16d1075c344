"""An application's own Celery app, sharing our broker: its tasks on its own queue.

Used by tests/test_queues.py as `celery -A tests.foreign_app worker`, configured from the
environment the test gives that worker; the test itself sends through `make_app`.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

WHOAMI = "foreign_app.whoami"


def whoami(task: Any) -> str:
    """The node that ran this task."""
    return task.request.hostname


def make_app(broker_url: str, backend_url: str, queue: str) -> Celery:
    app = Celery("foreign_app", broker=broker_url, backend=backend_url)
    app.conf.update(
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    app.task(name=WHOAMI, bind=True)(whoami)
    return app


app = make_app(
    os.environ.get("BROKER_URL", ""),
    os.environ.get("REDIS_URL", ""),
    os.environ.get("FOREIGN_QUEUE", "celery"),
)
