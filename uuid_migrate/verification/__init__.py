"""Verifying a migration: checks, validation reports for every phase, table snapshots, and
the comparison that proves a rollback restored them."""
