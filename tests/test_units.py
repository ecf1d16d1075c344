"""Pure logic: key ranges, dependency order, plan files, settings."""

from __future__ import annotations

import pytest

from config.settings import DEFAULT_BATCH_TARGET_MS, load_settings
from uuid_migrate.db import mask_secrets, mask_url
from uuid_migrate.errors import ConfigError, PlanError
from uuid_migrate.plan import plan_file
from uuid_migrate.plan.model import (
    ExtraColumn,
    Plan,
    Relation,
    Table,
    reference_uuid_column,
    validate,
)
from uuid_migrate.plan.ranges import KeyRange, ranges_from_bounds
from uuid_migrate.plan.stages import stages, table_order


def test_ranges_are_open_below_the_first_bound_and_above_the_last():
    assert list(ranges_from_bounds(["b", "m"])) == [
        KeyRange(None, "b"),
        KeyRange("b", "m"),
        KeyRange("m", None),
    ]


def test_a_table_with_fewer_rows_than_a_batch_is_one_unbounded_range():
    assert list(ranges_from_bounds([])) == [KeyRange(None, None)]


def test_reference_columns_follow_the_migration_guides_naming():
    assert reference_uuid_column("user_id") == "user_uuid_id"
    assert reference_uuid_column("owner") == "owner_uuid_id"
    assert reference_uuid_column("Clinic_ID") == "Clinic_uuid_id"


def plan_of(*relations: tuple[str, str, str], tables: tuple[str, ...] = ()) -> Plan:
    names = tables or tuple(dict.fromkeys(n for r in relations for n in (r[0], r[2])))
    return Plan(
        "public",
        tuple(Table(n, "id") for n in names),
        tuple(Relation(t, c, p) for t, c, p in relations),
    )


def test_parents_come_before_children_whatever_the_plan_order():
    plan = plan_of(("dashboards", "user_id", "users"), tables=("dashboards", "users", "clinics"))
    assert table_order(plan) == ["users", "dashboards", "clinics"]


def test_a_self_reference_is_deferred_to_a_references_stage_after_the_backfill():
    plan = plan_of(("employees", "manager_id", "employees"))
    result = {s.name: s for s in stages(plan)}
    assert result["employees"].relations == ()
    refs = result["employees:references"]
    assert refs.depends_on == ("employees",) and not refs.assigns_uuid


def test_a_cycle_translates_one_edge_early_and_defers_the_other():
    plan = plan_of(("a", "b_id", "b"), ("b", "a_id", "a"), tables=("a", "b"))
    result = {s.name: s for s in stages(plan)}
    assert result["a"].depends_on == () and result["b"].depends_on == ("a",)
    assert [r.column for r in result["b"].relations] == ["a_id"]
    assert result["a:references"].depends_on == ("a", "b")


def test_every_stage_comes_after_the_stages_it_depends_on():
    plan = plan_of(("c", "b_id", "b"), ("b", "a_id", "a"), ("a", "c_id", "c"), ("d", "a_id", "a"))
    seen: set[str] = set()
    for stage in stages(plan):
        assert set(stage.depends_on) <= seen
        seen.add(stage.name)


def test_plan_files_round_trip_and_shipped_plans_load_by_name():
    plan = Plan(
        "public",
        (Table("users", "id", extra_columns=(ExtraColumn("auth_id"),), batch_size=500),),
        (),
    )
    assert plan_file.load_text(plan_file.dumps(plan)) == plan
    clinic = plan_file.load("clinic")
    assert [t.name for t in clinic.tables] == ["users", "clinics", "dashboards", "providers"]
    assert any(not r.declared for r in clinic.relations)


def test_plans_that_cannot_work_are_refused_with_the_reason():
    with pytest.raises(PlanError, match="not a migrated table"):
        validate(Plan("public", (Table("a", "id"),), (Relation("a", "x_id", "missing"),)))
    with pytest.raises(PlanError, match="longer than 63 bytes"):  # a name given by hand
        validate(Plan("public", (Table("a", "id"),), (Relation("a", "x_id", "a", "y" * 64),)))
    with pytest.raises(PlanError, match="not valid TOML"):
        plan_file.load_text("tables = [")


def test_settings_come_from_the_environment_with_defaults():
    settings = load_settings(
        {"DATABASE_URL": "postgresql://u:p@h/db", "REDIS_URL": "redis://r:1/0"}
    )
    assert settings.broker_url == "redis://r:1/0"
    assert settings.batch_size is None  # the default: each table's own (plan/batch_sizes.py)
    assert settings.batch_target_ms == DEFAULT_BATCH_TARGET_MS
    assert load_settings({"BATCH_SIZE": "250"}).batch_size == 250
    with pytest.raises(ConfigError, match="BATCH_SIZE"):
        load_settings({"BATCH_SIZE": "lots"})


def test_passwords_never_survive_masking():
    assert "s3cret" not in mask_url("postgresql://app:s3cret@db:5432/prod")
    assert "s3cret" not in mask_secrets("Error connecting to redis://:s3cret@cache:6379/0 now")


def test_the_worker_config_flower_shows_hides_the_redis_password_and_keeps_our_backend():
    from config.celery import LedgerDrivenRedisBackend, make_app

    settings = load_settings({"REDIS_URL": "redis://:s3cretpw@127.0.0.1:6379/0"})
    app = make_app(settings)
    shown = app.conf.table()  # what a worker answers to `inspect conf` (Flower's Config tab)
    assert "s3cretpw" not in repr(shown)
    assert shown["result_backend"].startswith("redis://")
    assert isinstance(app.backend, LedgerDrivenRedisBackend)


def test_settings_never_show_a_password_in_their_repr():
    settings = load_settings(
        {"DATABASE_URL": "postgresql://u:pw-db@h/d", "REDIS_URL": "redis://:pw-redis@h/0"}
    )
    assert "pw-" not in repr(settings) and settings.database_url.endswith("@h/d")


def test_local_workers_get_exactly_the_producers_settings(tmp_path):
    from producer.local_workers import LocalWorkers

    every = {
        "DATABASE_URL": "postgresql://u:p%40ss@db:5432/app",
        "REDIS_URL": "redis://r:6380/2",
        "BROKER_URL": "amqp://guest:guest@mq:5672//",
        "BATCH_SIZE": "777",
        "BATCH_TARGET_MS": "250",
        "UUID_MIGRATE_QUEUE": "q1",
        "LOCK_TIMEOUT_MS": "1234",
        "BATCH_LOCK_TIMEOUT_MS": "321",
        "STATEMENT_TIMEOUT_MS": "4321",
        "DISPATCH_PAGE": "17",
        "LOG_FORMAT": "json",
        "FLOWER_BASIC_AUTH": "a:b",
        "BATCH_MAX_ATTEMPTS": "3",
        "RETRY_BACKOFF_MS": "10",
        "RETRY_BACKOFF_MAX_MS": "20",
        "HEARTBEAT_TIMEOUT_S": "9",
        "MIN_SPLIT_ROWS": "4",
        "RECONCILE_INTERVAL_S": "5",
        "MAX_LOCAL_WORKERS": "12",
        "WORKER_STOP_GRACE_S": "7",
        "THROTTLE_REPLICATION_LAG_S": "2.5",
        "THROTTLE_OLDEST_TRANSACTION_S": "60.0",
        "THROTTLE_WAL_MB_PER_S": "0.0",
        "THROTTLE_APPLICATION_SESSIONS": "2",
        "THROTTLE_APPLICATION_REST": "1.5",
    }
    settings = load_settings(every)
    assert settings.to_environment() == every
    assert load_settings(settings.to_environment()) == settings
    env = LocalWorkers(settings, 0, tmp_path).environment()
    assert load_settings(env) == settings
    defaults = load_settings({"DATABASE_URL": "postgresql://h/db"})
    assert load_settings(LocalWorkers(defaults, 0, tmp_path).environment()) == defaults


def test_derived_names_past_63_bytes_are_shortened_the_same_way_every_time():
    column = "x" * 60 + "_id"
    derived = reference_uuid_column(column)
    assert len(derived.encode()) <= 63 and derived.endswith("_uuid_id")
    assert derived.startswith("x" * 40) and derived == reference_uuid_column(column)
    assert reference_uuid_column("y" * 60 + "_id") != derived
    plan = validate(Plan("public", (Table("a", "id"),), (Relation("a", column, "a"),)))
    assert plan.relations[0].uuid_column == derived


def test_two_references_deriving_the_same_name_are_told_apart():
    from uuid_migrate.plan.naming import distinct_reference_columns

    first, second = distinct_reference_columns([Relation("t", "user_id", "u"), Relation("t", "user", "u")])
    assert first.uuid_column == "user_uuid_id"
    assert second.uuid_column != "user_uuid_id" and second.uuid_column.endswith("_uuid_id")
    again = distinct_reference_columns([Relation("t", "user_id", "u"), Relation("t", "user", "u")])
    assert again[1].uuid_column == second.uuid_column


def test_a_partitioned_table_round_trips_through_the_plan_file_and_its_index_step():
    from uuid_migrate.plan import plan_file
    from uuid_migrate.plan.model import Plan, Table
    from uuid_migrate.schema.partitioned import PartitionedUniqueIndex, partition_index_name
    from uuid_migrate.schema.steps import step_from_dict, step_to_dict, uuid_index

    plan = Plan("public", (Table("events", "id", partitioned=True, partition_key=("id",)),))
    again = plan_file.load_text(plan_file.dumps(plan))
    assert again.table("events") == plan.table("events")
    step = uuid_index(again, "events")
    assert isinstance(step, PartitionedUniqueIndex) and step.columns == ("id",)
    assert step_from_dict(step_to_dict(step)) == step and step.identity().endswith("events_uuid_id_key")
    long = partition_index_name("public", "p" * 70, "uuid_id")
    assert len(long.encode()) <= 63 and long.endswith("_uuid_id_key")
    assert long != partition_index_name("public", "p" * 69 + "q", "uuid_id")


def test_tables_of_other_schemas_are_named_schema_dot_table_and_round_trip():
    text = (
        'schema = "app"\n'
        '[[tables]]\nname = "users"\n'
        '[[tables]]\nname = "billing.cards"\n'
        '[[tables]]\nname = "odd.name"\nschema = "app"\n'  # a dot inside a name of `app`
        '[[relations]]\ntable = "billing.cards"\ncolumn = "holder"\nparent = "app.users"\n'
    )
    plan = plan_file.load_text(text)

    assert plan.where("users") == ("app", "users")
    assert plan.where("billing.cards") == ("billing", "cards")
    assert plan.where("odd.name") == ("app", "odd.name")
    assert plan.relations[0].parent == "users"  # `app.users` is the plan's own `users`
    assert plan.schemas() == ("app", "billing")
    assert plan_file.load_text(plan_file.dumps(plan)) == plan


def test_names_with_dots_survive_the_ledger_copy_and_older_copies_read_as_one_schema():
    from uuid_migrate.plan.plan_data import from_dict, to_dict

    plan = plan_file.load_text('[[tables]]\nname = "public.t"\nschema = "public"\n')
    older = {"schema": "public", "tables": [{"name": "a.b", "key": "id"}]}  # no plan_format

    assert plan.where("public.t") == ("public", "public.t")
    assert from_dict(to_dict(plan), stored=True) == plan
    assert from_dict(older, stored=True).where("a.b") == ("public", "a.b")
    assert from_dict(older).where("a.b") == ("a", "b")  # a plan file: schema.table
