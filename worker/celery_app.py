"""The Celery app of the workers, configured from the environment once, at start."""

from __future__ import annotations

from config.celery import make_app
from config.settings import load_settings

settings = load_settings()
app = make_app(settings)
app.conf.include = ["worker.tasks"]
