"""Rules compile once at load; a broken rule stops with its file, line, name and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtags.errors import ExpressionError, RuleError
from streamtags.rulebook.expressions import (
    Env,
    compile_expression,
    parse_duration_ms,
)
from streamtags.rulebook.loader import load_rules

ROOT = Path(__file__).resolve().parents[2]

CATALOGUE = {
    "cart_abandoned",
    "ip_hopping",
    "card_hopping",
    "frustrated",
    "high_value",
    "whale",
    "churn_risk",
    "new_user_no_purchase",
    "coupon_hunter",
    "window_shopper",
    "rapid_spender",
    "night_owl",
    "price_sensitive",
    "brand_loyal",
    "dispute_prone",
}


def test_every_rule_file_compiles_and_the_catalogue_is_complete() -> None:
    ruleset = load_rules(ROOT / "rules")
    assert set(ruleset.by_tag()) == CATALOGUE
    categories = {rule.tag: rule.category for rule in ruleset.rules}
    assert categories["ip_hopping"] == "risk"
    assert categories["cart_abandoned"] == "marketing"
    assert ruleset.by_tag()["cart_abandoned"].coupon is not None


GOOD = """\
rule: sample
category: risk
ttl: 1h
features:
  ips: {distinct: ip, on: logins, window: 1h}
when: ips >= 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sample.yaml"
    path.write_text(text)
    return path


def test_a_good_rule_compiles(tmp_path: Path) -> None:
    ruleset = load_rules(write(tmp_path, GOOD))
    assert ruleset.rules[0].name == "sample"


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [
        ("distinct: ip", "distinct: ipp", 5, "logins events have no field 'ipp'"),
        ("window: 1h}", "window: 1 hour}", 5, "not a duration"),
        ("ips >= 3", "ips >= 15m", 1, "cannot compare a number with a duration"),
        ("ips >= 3", "ipz >= 3", 1, "unknown name 'ipz'"),
        ("ips >= 3", "__import__('os')", 1, "unknown function '__import__'"),
        ("category: risk", "category: spam", 1, "'category' must be one of"),
        ("ttl: 1h", "ttl: soon", 1, "bad duration for 'ttl'"),
        ("on: logins,", "on: logins, where: {outcome: maybe},", 5, "'maybe' is not a possible"),
        ("on: logins,", "on: logins, where: {ip: {gte: 3}},", 5, "'ip' is text"),
    ],
)
def test_broken_rules_name_file_line_rule_and_reason(
    tmp_path: Path, old: str, new: str, line: int, fragment: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: rule 'sample':"), message
    assert fragment in message


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "when: [unclosed\n")
    with pytest.raises(RuleError, match=r"sample.yaml:\d+: .*not valid YAML"):
        load_rules(path)


def test_tag_conditions_must_name_existing_tags_without_cycles(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD.replace("ips >= 3", "ips >= 3 and tag('nope')"))
    with pytest.raises(RuleError, match="names no rule's tag"):
        load_rules(tmp_path)


def test_rules_reading_other_tags_run_after_them(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        GOOD.replace("rule: sample", "rule: watched").replace(
            "ips >= 3", "ips >= 1 and tag('base')"
        )
    )
    (tmp_path / "b.yaml").write_text(GOOD.replace("rule: sample", "rule: base"))
    names = [rule.name for rule in load_rules(tmp_path).rules]
    assert names.index("base") < names.index("watched")


def test_expressions_type_check_and_evaluate() -> None:
    names = {"a": "number", "gap": "duration"}
    assert compile_expression("a >= 3 and not a > 5", names=names).run(Env({"a": 4}, {}))  # type: ignore[arg-type]
    within = compile_expression("2 * gap", names=names, expect="duration")  # type: ignore[arg-type]
    assert within.run(Env({"gap": 1000.0}, {})) == 2000.0
    assert compile_expression("ratio(a, 0) == 0", names=names).run(Env({"a": 4}, {}))  # type: ignore[arg-type]
    with pytest.raises(ExpressionError):
        compile_expression("a + gap > 1", names=names)  # type: ignore[arg-type]
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("15m", scale=0.01) == 9_000


def test_time_scale_shortens_every_duration() -> None:
    ruleset = load_rules(ROOT / "rules", time_scale=1 / 60)
    cart = ruleset.by_tag()["cart_abandoned"]
    assert cart.absence is not None
    assert cart.absence.within.run(Env({}, {})) == 15_000
    assert cart.ttl_ms == 24 * 60_000


def test_a_field_computed_on_one_stream_and_plain_on_another_reads_both(tmp_path: Path) -> None:
    from streamtags.contracts.codec import decode_event
    from streamtags.rulebook.fields import field_reader

    reader, _ = field_reader(["orders", "browse"], "brand")
    order = decode_event(
        "orders",
        b'{"event_id":"e","user_id":"u","ts":1795341600000,'
        b'"order_id":"o","status":"paid","amount":5,'
        b'"items":[{"sku":"a","brand":"zen","unit_price":5}]}',
    )
    view = decode_event(
        "browse",
        b'{"event_id":"e","user_id":"u","ts":1795341600000,"action":"product_view","brand":"acme"}',
    )
    assert reader(order, None) == "zen"
    assert reader(view, None) == "acme"
