"""Logging of the worker and producer processes: text or JSON lines, connection strings masked.

Every handler gets the masking filter, so a URL with a password that reaches a log message,
an exception or a third-party library's log line is written with `***` in its place.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

from config.settings import Settings
from uuid_migrate.db import mask_secrets

#: The `extra=` key under which a log call passes its structured fields.
FIELDS = "fields"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class MaskSecrets(logging.Filter):
    """Replaces the password of any `scheme://user:password@` in the message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_secrets(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            setattr(record, FIELDS, {k: _mask(v) for k, v in fields.items()})
        return True


def _mask(value: Any) -> Any:
    return mask_secrets(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(
    settings: Settings, level: int | str = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """The root logger writes to `stream` (stderr) in the settings' format, secrets masked."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(settings.log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or logging.INFO)
    logging.captureWarnings(True)  # Python warnings become log lines in the same format
    mask_all_handlers()
    return handler


def mask_all_handlers() -> None:
    """Put the masking filter on every handler there is, including other libraries' own."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, MaskSecrets) for f in handler.filters):
                handler.addFilter(MaskSecrets())


def fields_text(fields: dict[str, Any]) -> str:
    """`key=value key=value`: the same fields, readable in a text log."""
    return " ".join(f"{key}={value}" for key, value in fields.items())
