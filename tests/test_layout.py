"""The layout's rules, checked on the source: each rule has one owner, and it stays that way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = [
    p
    for folder in ("uuid_migrate", "producer", "worker", "config", "devtools")
    for p in (ROOT / folder).rglob("*.py")
]
#: SQL that reads or writes a ledger table.
LEDGER_SQL = re.compile(r"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+uuid_migration\.", re.IGNORECASE)


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_module_outside_the_tests_passes_300_lines():
    long = {_relative(p): n for p in CODE if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_the_domain_package_keeps_at_most_eight_modules_at_its_top():
    top = sorted(p.name for p in (ROOT / "uuid_migrate").glob("*.py"))
    assert len(top) <= 8, top


def test_only_the_ledger_runs_sql_on_the_ledgers_tables():
    outside = [
        _relative(p)
        for p in CODE
        if LEDGER_SQL.search(p.read_text()) and "uuid_migrate/ledger/" not in _relative(p)
    ]
    assert outside == []


@pytest.mark.parametrize("name", ["celery", "kombu", "worker", "producer"])
def test_the_domain_never_imports_celery_the_worker_or_the_producer(name):
    pattern = re.compile(rf"^\s*(from|import)\s+{name}\b", re.MULTILINE)
    found = [
        _relative(p) for p in (ROOT / "uuid_migrate").rglob("*.py") if pattern.search(p.read_text())
    ]
    assert found == []


def test_nothing_a_user_reads_speaks_of_a_seed():
    read = [*(ROOT / "producer").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    found = [_relative(p) for p in read if re.search(r"\bseed", p.read_text(), re.IGNORECASE)]
    assert found == []
