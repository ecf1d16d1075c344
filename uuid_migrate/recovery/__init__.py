"""Recovering from lost work: the reconciler, re-sending batches, pause and resume, and the
circuit breaker that stops a broken run."""
