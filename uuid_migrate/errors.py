"""One rooted error tree. Messages become user-facing text only in the CLI."""

from __future__ import annotations


class MigrateError(Exception):
    """Raised for every failure the tool understands; the root of the tree."""


class ConfigError(MigrateError):
    """Raised when a setting or command-line value is invalid."""


class ConnectionFailed(MigrateError):
    """Raised when PostgreSQL or Redis cannot be reached."""


class PlanError(MigrateError):
    """Raised when a plan (file or discovered) cannot describe a valid migration."""


class LockBusy(MigrateError):
    """Raised when DDL could not take its lock within lock_timeout, after retries."""


class RunStateError(MigrateError):
    """Raised when the ledger's state forbids what was asked (e.g. a different plan is mid-run)."""


class TriggersWouldFire(MigrateError):
    """The application's triggers would fire on a batch that cannot silence them, and the
    run did not accept that: permanent, until a role that can runs it (or it is accepted)."""


class BatchFailed(MigrateError):
    """Raised when one batch's transaction could not be committed."""


class WorkersFailed(MigrateError):
    """Raised when the local worker processes (`--workers N`) could not be started."""
