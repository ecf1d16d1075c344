"""Planning a migration: the plan as data, plan files, discovery from the catalog, stages in
dependency order, key ranges, and walking a table's key to cut them."""
