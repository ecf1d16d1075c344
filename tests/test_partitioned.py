"""A hash-partitioned string-keyed table migrated as one table, end to end: discovered, its
unique index built partition by partition, validated, then rolled back exactly."""

from __future__ import annotations

import io

import pytest

from producer import commands, rollback_command, status_command, validate_command
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import discovery
from uuid_migrate.schema.apply import apply_step
from uuid_migrate.schema.steps import uuid_index

from .helpers import database_dump, rows, scalar

pytestmark = pytest.mark.e2e

EVENTS = 3000
SCHEMA = f"""
CREATE TABLE events (id text PRIMARY KEY, kind text NOT NULL) PARTITION BY HASH (id);
CREATE TABLE events_p0 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE events_p1 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE events_p2 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 2);
CREATE INDEX events_kind ON events (kind);
CREATE TABLE event_notes (id text PRIMARY KEY, event_id text REFERENCES events, body text);
-- a partitioned child, keyed by an integer, referencing the partitioned parent
CREATE TABLE event_hits (id bigint PRIMARY KEY, event_id text REFERENCES events)
PARTITION BY RANGE (id);
CREATE TABLE event_hits_low PARTITION OF event_hits FOR VALUES FROM (MINVALUE) TO (700);
CREATE TABLE event_hits_high PARTITION OF event_hits FOR VALUES FROM (700) TO (MAXVALUE);
INSERT INTO events SELECT 'ev-' || md5(i::text), 'k' || (i % 5) FROM generate_series(1, {EVENTS}) i;
INSERT INTO event_notes SELECT 'n' || i,
    CASE WHEN i % 17 = 0 THEN NULL ELSE 'ev-' || md5((1 + i % {EVENTS})::text) END, 'note'
FROM generate_series(1, 2000) i;
INSERT INTO event_hits SELECT i, 'ev-' || md5((1 + (i * 7) % {EVENTS})::text)
FROM generate_series(1, 1500) i;
"""
PARTITIONS = ("events_p0", "events_p1", "events_p2")


def test_a_hash_partitioned_table_is_migrated_as_one_and_rolled_back_exactly(conn, settings):
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        plan = discovery.discover(cur)
    assert {t.name for t in plan.migrated()} == {"events", "event_notes"}
    assert plan.table("events").partitioned and not plan.table("event_hits").migrate
    names = {t.name for t in plan.tables} | {s.name for s in plan.skipped}
    assert not [n for n in names if "events_p" in n or "event_hits_" in n], names
    assert {(r.table, r.parent) for r in plan.relations} == {
        ("event_notes", "events"), ("event_hits", "events")
    }
    before = database_dump(conn, settings.database_url)

    out = io.StringIO()
    result = commands.run(settings, workers=2, out=out)

    assert result.status == RunStatus.SUCCEEDED, out.getvalue()
    assert scalar(conn, "SELECT count(*) FROM events WHERE uuid_id IS NULL") == 0
    assert scalar(conn, "SELECT count(DISTINCT uuid_id) FROM events") == EVENTS
    for partition in PARTITIONS:  # each partition holds rows, and each has its uuid_id
        assert scalar(conn, f"SELECT count(uuid_id) = count(*) AND count(*) > 0 FROM {partition}")
    assert scalar(
        conn,
        "SELECT count(*) FROM events e JOIN id_mappings m ON m.table_name = 'events' "
        "AND m.old_id = e.id AND m.new_id = e.uuid_id",
    ) == EVENTS
    assert scalar(conn, "SELECT count(*) FROM id_mappings WHERE table_name = 'events'") == EVENTS
    for child in ("event_notes", "event_hits"):
        assert scalar(
            conn,
            f"SELECT count(*) FROM {child} c LEFT JOIN events e ON e.id = c.event_id "
            "WHERE c.event_uuid_id IS DISTINCT FROM e.uuid_id",
        ) == 0
        assert scalar(conn, f"SELECT count(event_uuid_id) FROM {child}") > 0
    assert scalar(conn, "SELECT count(event_uuid_id) FROM event_notes") == 2000 - 2000 // 17
    _assert_unique_index_built_per_partition(conn)
    report = status_command.status(settings)["validation"]
    assert report["overallStatus"] == "passed", report
    assert ("uuid_index_valid", "events") in {(c["name"], c["table"]) for c in report["checks"]}

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back" and outcome.report["overallStatus"] == "passed"
    assert database_dump(conn, settings.database_url) == before


def _assert_unique_index_built_per_partition(conn) -> None:
    """The parent's index is valid and holds (uuid_id, id); each partition has its own,
    attached to it."""
    parent = rows(
        conn,
        "SELECT i.indisvalid, i.indisunique, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indexrelid = 'events_uuid_id_key'::regclass",
    )
    assert parent and parent[0][0] and parent[0][1], parent
    assert "(uuid_id, id)" in parent[0][2]
    attached = rows(
        conn,
        "SELECT c.relname, pi.indisvalid FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
        "JOIN pg_index pi ON pi.indexrelid = h.inhrelid "
        "WHERE h.inhparent = 'events_uuid_id_key'::regclass ORDER BY 1",
    )
    assert attached == [(f"{p}_uuid_id_key", True) for p in PARTITIONS]


def test_a_partitioned_index_build_interrupted_halfway_is_completed_and_rolled_back(conn, settings):
    """A crash left one partition's index built and attached, one invalid, one missing and the
    parent's invalid: building again keeps the good one, rebuilds the rest and attaches them."""
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
    before = database_dump(conn, settings.database_url)
    result = commands.run(settings, workers=2, out=io.StringIO())
    assert result.status == RunStatus.SUCCEEDED
    with conn.cursor() as cur:
        plan = discovery.discover(cur)
        index = uuid_index(plan, "events")
        cur.execute("DROP INDEX events_uuid_id_key")
        cur.execute("CREATE UNIQUE INDEX events_p0_uuid_id_key ON events_p0 (uuid_id, id)")
        cur.execute("CREATE UNIQUE INDEX events_p1_uuid_id_key ON events_p1 (uuid_id, id)")
        cur.execute("UPDATE pg_index SET indisvalid = false "
                    "WHERE indexrelid = 'events_p1_uuid_id_key'::regclass")
        cur.execute("CREATE UNIQUE INDEX events_uuid_id_key ON ONLY events (uuid_id, id)")
        cur.execute("ALTER INDEX events_uuid_id_key ATTACH PARTITION events_p0_uuid_id_key")
        kept = scalar(conn, "SELECT 'events_p0_uuid_id_key'::regclass::oid")
        assert index.validity(cur) is False

    assert apply_step(conn, result.run_id, index, lock_timeout_ms=0)

    with conn.cursor() as cur:
        assert index.validity(cur) is True
    _assert_unique_index_built_per_partition(conn)
    assert scalar(conn, "SELECT 'events_p0_uuid_id_key'::regclass::oid") == kept
    post = validate_command.validate(settings)
    assert post["phase"] == "post" and post["overallStatus"] == "passed", post
    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())
    assert outcome.report["overallStatus"] == "passed"
    assert database_dump(conn, settings.database_url) == before
