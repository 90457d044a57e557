"""The ``streamtags`` command line (also ``python -m streamtags``).

The only place that reads ``STREAMTAGS_*`` environment variables. Commands
raise; :func:`main` maps what they raise to one line on stderr and an exit
code, by family (see :mod:`streamtags.errors`):

====  =====================================================================
code  meaning
====  =====================================================================
0     done
1     the command ran and the answer is no: ``rules check`` found a broken
      rule, a scenario failed, a persona missed its tag, Redis did not
      answer ``tags``; also a :class:`~streamtags.errors.DataError` that
      reached the command line
2     the command could not run: a :class:`~streamtags.errors.LoadError`
      (settings, rules, scenarios, recordings, topics), a file that cannot
      be read, Kafka out of reach
====  =====================================================================

The line reads ``streamtags <command>: <message>``, e.g.
``streamtags rules scenarios: rules/scenarios/x.yaml:4: unknown key 'untill' ...``;
settings are read before any command runs, so theirs reads ``streamtags: <message>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from streamtags.errors import DataError, SettingsError, StreamtagsError
from streamtags.settings import Settings

__all__ = ["build_parser", "failure", "main"]


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    from streamtags.live.app import run_worker

    try:
        run_worker(settings)
    except KafkaError as exc:
        print(
            f"streamtags worker: cannot reach Kafka at {settings.kafka_bootstrap}: {exc}",
            file=sys.stderr,
        )
        return 2
    return 0


def _cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from streamtags.contracts.recordings import read_recording
    from streamtags.live.producing import produce

    messages = list(read_recording(Path(args.file)))
    sent = asyncio.run(
        produce(
            messages,
            bootstrap=settings.kafka_bootstrap,
            topics=settings.inputs,
            partitions=settings.partitions,
            security=settings.kafka_security,
        )
    )
    print(f"produced {sent} messages to {settings.kafka_bootstrap}")
    return 0


def _cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    script = Path(__file__).resolve().parents[2] / "stack" / "stack.sh"
    if not script.exists():
        print("streamtags stack: stack/stack.sh is only in a source checkout", file=sys.stderr)
        return 2
    return subprocess.call(["bash", str(script), args.action])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamtags",
        description="Real-time customer tags from Kafka event streams. Configuration comes "
        "from STREAMTAGS_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser(
        "worker",
        help="run a tagging worker (Faust) until stopped",
        description="Consume the input topics, tag users, and publish to Kafka and Redis.",
    )
    worker.set_defaults(run=_cmd_worker)

    produce = commands.add_parser(
        "produce",
        help="send a recorded JSON Lines file to the input topics",
        description='Send each line of FILE to the topic of its "stream" field, keyed by user_id.',
    )
    produce.add_argument("file", metavar="FILE.jsonl")
    produce.set_defaults(run=_cmd_produce)

    stack = commands.add_parser(
        "stack",
        help="start, stop or inspect the local Kafka + Redis stack",
        description="Run stack/stack.sh: up (idempotent), down (only what up started), status.",
    )
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.set_defaults(run=_cmd_stack)

    _add_later_commands(commands)
    _name_commands(parser)
    return parser


def _add_later_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands of schemas, rules, the live product and Redis (registered by their modules)."""
    from streamtags.cli import live as live_cli
    from streamtags.cli import redis as redis_cli
    from streamtags.cli import rules as rules_cli
    from streamtags.cli import schemas as schemas_cli

    schemas_cli.register(commands)
    rules_cli.register(commands)
    live_cli.register(commands)
    redis_cli.register(commands)


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Give every command its own name (``streamtags rules check``) for its error line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.set_defaults(prog=command.prog)
                _name_commands(command)


def failure(prog: str, error: StreamtagsError | OSError) -> tuple[int, str]:
    """The exit code and the one line ``prog`` reports for ``error`` (see the module doc)."""
    return (1 if isinstance(error, DataError) else 2), f"{prog}: {error}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse arguments, read settings, run the command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"streamtags: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.run(args, settings)
    except (StreamtagsError, OSError) as exc:
        code, line = failure(args.prog, exc)
        print(line, file=sys.stderr)
    return code
