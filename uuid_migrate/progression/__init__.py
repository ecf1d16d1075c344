"""How a run moves on after a batch, a page, a stage and the last stage, decided from the
ledger; the checkpoint and live progress in Redis; metrics."""
