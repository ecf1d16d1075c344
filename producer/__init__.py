"""The producer: plans a run, applies the additive DDL, enqueues chords, and the CLI."""
