"""Domain code of uuid-migrate: the plan, key ranges, ledger, batch SQL. Imports neither worker nor producer."""
