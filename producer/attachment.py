"""A producer attached to a database: what makes `rollback` refuse without `--force`.

From its start until it returns (through `run --wait` or `retry --wait`, paused or not), a
producer holds a shared advisory lock in a session of its own; a rollback asks for the same
lock exclusive, so it sees every attached producer, and PostgreSQL drops the lock with the
session however the producer ends, even killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2

from uuid_migrate import db
from uuid_migrate.errors import ConnectionFailed, RunStateError
from uuid_migrate.ledger import runs


class Attachment:
    """The session holding this producer's shared lock; `refresh` takes it again if lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    @classmethod
    def take(cls, url: str) -> Attachment:
        attachment = cls(url)
        attachment._lock()
        return attachment

    def _lock(self) -> None:
        conn = db.connect(self.url, autocommit=True)
        with conn.cursor() as cur:
            attached = runs.try_attach(cur)
        if not attached:
            conn.close()
            raise RunStateError(
                "a rollback of this database is in progress; start again once it has ended"
            )
        self.conn = conn

    def refresh(self) -> None:
        """After a lost session (a restarted server, a terminated backend): attach again, as
        far as possible; a rollback forced meanwhile ends the run anyway."""
        if self.conn is not None:
            try:
                with self.conn.cursor() as cur:
                    runs.session_alive(cur)
                return
            except psycopg2.Error:
                self.release()
        with contextlib.suppress(ConnectionFailed, RunStateError):
            self._lock()

    def release(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None
