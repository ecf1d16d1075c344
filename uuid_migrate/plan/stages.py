"""Dependency order of a plan: which unit of work (a stage) may start after which.

A migrated table gets a `backfill` stage: it assigns `uuid_id` and translates every reference
whose parent finished earlier. A reference to the table itself, or to a table in the same
cycle that comes later, cannot be translated then; it goes to the table's `references` stage,
which runs once every parent concerned has its UUIDs. So self-references and cycles never
deadlock the plan. A table that is not migrated itself only has a `references` stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from uuid_migrate.plan.model import Plan, Relation

BACKFILL = "backfill"
REFERENCES = "references"


@dataclass(frozen=True)
class Stage:
    """One unit of dependency order: a table's backfill or its deferred references."""

    name: str
    table: str
    kind: str
    assigns_uuid: bool
    relations: tuple[Relation, ...]
    depends_on: tuple[str, ...]


def stage_name(table: str, kind: str) -> str:
    return table if kind == BACKFILL else f"{table}:{REFERENCES}"


def table_of(stage: str) -> str:
    """The table a stage name belongs to (for display: the plan's Stage has it exactly)."""
    return stage.removesuffix(f":{REFERENCES}")


def table_order(plan: Plan) -> list[str]:
    """Migrated tables with parents first; members of one cycle keep plan order."""
    migrated = [t.name for t in plan.migrated()]
    parents = {name: set() for name in migrated}
    for rel in plan.relations:
        if rel.table in parents and rel.parent != rel.table:
            parents[rel.table].add(rel.parent)
    order: list[str] = []
    for component in _components_parents_first(migrated, parents):
        order += sorted(component, key=migrated.index)
    return order


def stages(plan: Plan) -> list[Stage]:
    """Every stage of the plan, each after all the stages it depends on."""
    order = table_order(plan)
    position = {name: i for i, name in enumerate(order)}
    result: list[Stage] = []
    deferred: list[Stage] = []
    for name in order:
        early, late = _split_relations(plan.relations_of(name), name, position)
        deps = tuple(sorted({r.parent for r in early}, key=position.__getitem__))
        result.append(Stage(name, name, BACKFILL, True, early, deps))
        if late:
            late_deps = {name} | {r.parent for r in late}
            deferred.append(_references_stage(name, late, late_deps, position))
    for table in plan.tables:
        if not table.migrate and plan.relations_of(table.name):
            rels = plan.relations_of(table.name)
            deferred.append(_references_stage(table.name, rels, {r.parent for r in rels}, position))
    return result + deferred


def _references_stage(
    table: str, relations: tuple[Relation, ...], deps: set[str], position: dict[str, int]
) -> Stage:
    ordered = tuple(sorted(deps, key=position.__getitem__))
    return Stage(stage_name(table, REFERENCES), table, REFERENCES, False, relations, ordered)


def _split_relations(
    relations: tuple[Relation, ...], table: str, position: dict[str, int]
) -> tuple[tuple[Relation, ...], tuple[Relation, ...]]:
    early = tuple(r for r in relations if position[r.parent] < position[table])
    late = tuple(r for r in relations if position[r.parent] >= position[table])
    return early, late


def _components_parents_first(nodes: list[str], parents: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each listed after the components it points to."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for parent in sorted(parents[node], key=nodes.index):
            if parent not in index:
                visit(parent)
                low[node] = min(low[node], low[parent])
            elif parent in on_stack:
                low[node] = min(low[node], index[parent])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    for node in nodes:
        if node not in index:
            visit(node)
    return components
