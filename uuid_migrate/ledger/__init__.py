"""The ledger: every statement on `uuid_migration.*`, the durable truth of a migration.

`tables` creates them; `runs`, `stages` and `batches` hold the rows and every move between
the states of `states`, each a compare-and-set; `error_records`, `reports`, `step_records`,
`snapshots`, `transitions` and `added_mappings` hold what is recorded beside them; `figures` and
`run_metrics` read aggregates. No other module runs SQL on the ledger's tables.
"""
