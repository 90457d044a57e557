"""``streamtags schemas export``: every JSON Schema streamtags publishes, in one place.

The contracts (input events, output records) come from
:mod:`streamtags.contracts.schemas`; the rule and scenario file schemas from
the specs in the rulebook and offline layers, which the contracts layer must
not import. Analysts' editors use the last two to complete and check rule
and scenario files (see ``rules/README.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamtags.contracts.schemas import CONTRACTS, SchemaSource, export
from streamtags.offline.scenario_spec import ScenarioSpec
from streamtags.rulebook.spec import RuleSpec
from streamtags.settings import Settings

__all__ = ["SCHEMAS", "register"]

#: File stem (``schemas/<stem>.schema.json``) -> model and JSON Schema mode.
SCHEMAS: dict[str, SchemaSource] = {
    **CONTRACTS,
    "rule": (RuleSpec, "validation"),
    "scenario": (ScenarioSpec, "validation"),
}


def _export(args: argparse.Namespace, settings: Settings) -> int:
    for path in export(Path(args.dir), SCHEMAS):
        print(f"wrote {path}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``schemas export`` to the CLI."""
    schemas = commands.add_parser(
        "schemas", help="JSON Schemas of the contracts and of rule and scenario files"
    )
    schema_cmds = schemas.add_subparsers(dest="schemas_command", required=True)
    export_cmd = schema_cmds.add_parser(
        "export",
        help="write the JSON Schemas generated from the models",
        description="Write one JSON Schema file per contract, plus rule.schema.json and "
        "scenario.schema.json for editors, into DIR (default schemas/).",
    )
    export_cmd.add_argument("--dir", default="schemas")
    export_cmd.set_defaults(run=_export)
