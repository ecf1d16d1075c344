"""Domain code of uuid-migrate, grouped by what it does; imports neither worker nor producer.

- `plan/`: the migration as data, plan files, catalog discovery, stages, key ranges and walks
- `schema/`: schema changes as steps with forward and reverse, applied with lock timeouts
- `ledger/`: every statement on the ledger's tables (`uuid_migration.*`) and their states
- `execution/`: the batch statement, one attempt, a batch's run with retries and splits
- `progression/`: what comes next after a batch, a page, a stage and a run; live progress
- `recovery/`: the reconciler, re-sending batches, pause and resume, the circuit breaker
- `verification/`: checks, validation reports, snapshots and the rolled-back comparison
"""
