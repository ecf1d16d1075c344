"""Plans as TOML files: what `uuid-migrate plan` prints and `--plan FILE` reads."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from uuid_migrate.errors import PlanError
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.plan_data import from_dict, to_dict

#: Plans shipped with the tool, usable by name (`--plan clinic`).
SHIPPED_PLANS = Path(__file__).resolve().parents[2] / "config" / "plans"


def load(path_or_name: str) -> Plan:
    path = Path(path_or_name)
    if not path.exists() and (SHIPPED_PLANS / f"{path_or_name}.toml").exists():
        path = SHIPPED_PLANS / f"{path_or_name}.toml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PlanError(f"plan file {path_or_name} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan file {path_or_name}: {exc}") from None
    return load_text(text, path_or_name)


def load_text(text: str, source: str = "plan") -> Plan:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source} is not valid TOML: {exc}") from None
    return from_dict(data)


#: Written as `[[name]]` sections, one entry each, however few there are.
_SECTIONS = ("tables", "relations", "skipped")


def dumps(plan: Plan) -> str:
    header = (
        "# uuid-migrate plan: edit to restrict tables, add extra columns, declare relations\n"
        "# without a constraint (declared = false) or set batch_size per table. [[skipped]]\n"
        "# lists what discovery found and leaves alone, with the reason.\n"
    )
    data = to_dict(plan)
    text = tomli_w.dumps({k: v for k, v in data.items() if k not in _SECTIONS})
    for section in _SECTIONS:
        for entry in data.get(section, []):
            text += f"\n[[{section}]]\n" + tomli_w.dumps(entry)
    return header + text
