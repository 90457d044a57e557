"""``streamtags rules ...``: check rules, replay recordings, run scenarios (all offline).

A broken rule or scenario file raises a located :class:`~streamtags.errors.LoadError`,
which :func:`streamtags.cli.main.main` turns into one line and exit code 2;
only ``rules check`` answers a broken rule itself, with exit code 1, because
finding one is its job.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from streamtags.errors import RuleError
from streamtags.rulebook.loader import Ruleset, load_rules
from streamtags.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _load(directory: str | None, settings: Settings) -> Ruleset:
    path = Path(directory) if directory else settings.rules_dir
    return load_rules(path, time_scale=settings.time_scale)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        ruleset = _load(args.dir, settings)
    except RuleError as exc:
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return 1
    for rule in ruleset.rules:
        kind = "absence" if rule.absence else "when"
        print(f"ok  {rule.name:<22} {rule.category:<9} {kind:<7} {rule.path}:{rule.line}")
    print(f"{len(ruleset.rules)} rules compiled")
    return 0


def _format(record: Mapping[str, Any]) -> str:
    if "change_id" in record:
        figures = ", ".join(f"{k}={v:g}" for k, v in record["evidence"]["figures"].items())
        return (
            f"{record['ts']}  {record['user_id']:<12} {record['tag']:<22} {record['action']:<8} "
            f"[{record['category']}/{record['severity']}] {figures}"
        )
    return (
        f"{record['abandoned_at']}  {record['user_id']:<12} COUPON cart={record['cart_id']} "
        f"value={record['cart_value']:.2f} {record['coupon']['discount_pct']:g}% until "
        f"{record['coupon']['valid_until']} trigger={record['trigger_id']}"
    )


def _test(args: argparse.Namespace, settings: Settings) -> int:
    from streamtags.contracts.events import parse_event_time
    from streamtags.offline.replay import Rejected, Replay, read_events

    ruleset = _load(args.rules, settings)
    until: int | None = None
    if args.until:
        try:
            until = parse_event_time(int(args.until) if args.until.isdigit() else args.until)
        except ValueError as exc:
            print(f"{args.prog}: --until: {exc}", file=sys.stderr)
            return 2
    lateness_ms = args.lateness_ms if args.lateness_ms is not None else settings.lateness_ms
    replay = Replay(
        ruleset,
        lateness_ms,
        max_future_skew_ms=settings.max_future_skew_ms,
        end_ms=until,
    )
    events = []
    rejected = 0
    for item in read_events(Path(args.events)):
        if isinstance(item, Rejected):
            rejected += 1
            print(f"rejected line {item.line}: {item.reason}", file=sys.stderr)
        else:
            events.append(item)
    replay.feed(events)
    if until is not None:
        replay.until(until)
    else:
        replay.settle()
    for rejection in replay.rejections:
        rejected += 1
        where = f"line {rejection.decoded.offset}"
        print(f"rejected {where} ({rejection.kind}): {rejection.reason}", file=sys.stderr)
    if args.json:
        for record in replay.records:
            sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
        return 0
    for record in replay.records:
        print(_format(record))
    print(f"\n{len(events)} events replayed, {rejected} rejected; per tag:")
    for tag, counts in sorted(replay.summary().items()):
        print(f"  {tag:<22} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def _scenarios(args: argparse.Namespace, settings: Settings) -> int:
    from streamtags.offline.scenarios import load_scenarios, run_scenario

    ruleset = _load(args.rules, settings)
    scenarios = load_scenarios(
        Path(args.dir), time_scale=settings.time_scale, tags=ruleset.by_tag()
    )
    failed = 0
    for scenario in scenarios:
        result = run_scenario(scenario, ruleset, lateness_ms=args.lateness_ms)
        mark = "PASS" if result.passed else "FAIL"
        print(f"{mark}  {scenario.name}  ({scenario.path})")
        for failure in result.failures:
            print(f"      {failure}")
        failed += not result.passed
    print(f"{len(scenarios) - failed} passed, {failed} failed")
    return 1 if failed else 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rules check|test|scenarios`` to the CLI."""
    rules = commands.add_parser("rules", help="check rules, replay recordings, run scenarios")
    sub = rules.add_subparsers(dest="rules_command", required=True)

    check = sub.add_parser(
        "check",
        help="compile every rule and report problems with file and line",
        description="Load and compile every rules/*.yaml; exit 1 with file:line: reason on error.",
    )
    check.add_argument("dir", nargs="?", help="rules directory (default STREAMTAGS_RULES_DIR)")
    check.set_defaults(run=_check)

    test = sub.add_parser(
        "test",
        help="replay a recorded JSON Lines file through the engine offline",
        description="Replay FILE on a simulated clock and print tag changes and coupon "
        "triggers in order, then a per-tag summary. Same input, same output.",
    )
    test.add_argument("--events", required=True, metavar="FILE.jsonl")
    test.add_argument("--until", help="advance the clock to this time (RFC 3339 or epoch ms)")
    test.add_argument(
        "--json", action="store_true", help="print the records exactly as on the output topics"
    )
    test.add_argument("--rules", help="rules directory")
    test.add_argument("--lateness-ms", type=int, default=None)
    test.set_defaults(run=_test)

    scenarios = sub.add_parser(
        "scenarios",
        help="run the analysts' rule scenarios",
        description="Run every scenario in DIR and report each expectation that failed; "
        "exit 1 when one failed, 2 when a rule or scenario file is broken.",
    )
    scenarios.add_argument("--dir", default="rules/scenarios")
    scenarios.add_argument("--rules", help="rules directory")
    scenarios.add_argument("--lateness-ms", type=int, default=10_000)
    scenarios.set_defaults(run=_scenarios)
