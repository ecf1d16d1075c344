"""Running a batch: its statement, one attempt in one transaction with its ledger row, and
its run to an end with retries, splits and a heartbeat."""
