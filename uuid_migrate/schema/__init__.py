"""Changing the application's schema: steps as data with their reverse, applied with short
lock timeouts and retries, and reversed by a rollback."""
