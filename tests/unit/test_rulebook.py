"""Rules compile once at load; a broken rule stops with its file, line, name and reason."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from streamtags.contracts.events import STREAMS
from streamtags.errors import ExpressionError, RuleError
from streamtags.rulebook.expressions import (
    Env,
    compile_expression,
    parse_duration_ms,
)
from streamtags.rulebook.features import KINDS
from streamtags.rulebook.loader import load_rules
from streamtags.rulebook.spec import Stream

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


ABSENCE = """\
rule: sample
category: marketing
ttl: 1h
absence:
  start: {on: browse, where: {action: add_to_cart}}
  stop: {on: orders}
  match: cart_id
  within: 15m
coupon: {discount_pct: 10, valid_for: 1h}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sample.yaml"
    path.write_text(text)
    return path


def test_a_good_rule_compiles(tmp_path: Path) -> None:
    ruleset = load_rules(write(tmp_path, GOOD))
    assert ruleset.rules[0].name == "sample"
    absence = load_rules(write(tmp_path, ABSENCE)).rules[0]
    assert absence.coupon is not None and absence.coupon.valid_for_ms == 3_600_000


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


@pytest.mark.parametrize(
    ("text", "old", "new", "line", "fragment"),
    [
        (GOOD, "window: 1h}", "window: 1h, cap: lots}", 5, "'features.ips.cap' must be a valid"),
        (GOOD, "window: 1h}", "window: 1h, cap: 0}", 5, "'features.ips.cap' must be greater"),
        (GOOD, "on: logins,", "on: 5,", 5, "'features.ips.on' must be one of 'orders'"),
        (GOOD, "on: logins,", "on: [logins, login],", 5, "'features.ips.on.1' must be one of"),
        (GOOD, "on: logins,", "onn: logins,", 5, "unknown key 'onn' (known: cap, distinct, on"),
        (GOOD, "window: 1h}", "windw: 1h}", 5, "unknown key 'windw'"),
        (GOOD, "distinct: ip,", "distinkt: ip,", 5, "'features.ips' needs exactly one of"),
        (GOOD, "distinct: ip,", "distinct: ip, sum: amount,", 5, "needs exactly one of"),
        (GOOD, "distinct: ip,", "count: event,", 5, "'features.ips.count' must be one of"),
        (GOOD, "window: 1h}", "window: 1h, bucket: 1d}", 5, "unknown key 'bucket'"),
        (GOOD, "on: logins,", "on: logins, where: {ip: {gtee: 3}},", 5, "key 'gtee' in"),
        (GOOD, "on: logins,", "on: logins, wehre: {ip: x},", 5, "unknown key 'wehre'"),
        (GOOD, "  ips: {", "  IPs: {", 5, "key 'IPs' in 'features' must be a lower_snake_case"),
        (GOOD, "ttl: 1h", "ttl: 1h\nuntill: 2h", 1, "unknown key 'untill' (known: absence,"),
        (GOOD, "ttl: 1h", "ttl: 1h\nversion: two", 1, "'version' must be a valid integer"),
        (GOOD, "ttl: 1h", "ttl: 1h\nseverity: urgent", 1, "'severity' must be one of"),
        (GOOD, "ttl: 1h", "ttl: 1h\nclear: never", 1, "'clear' must be one of"),
        (GOOD, "ttl: 1h", "ttl: 1h\ncooldown: a while", 1, "bad duration for 'cooldown'"),
        (GOOD, "ttl: 1h\n", "", 1, "'ttl' is required"),
        (GOOD, "rule: sample", "rule: sample\ntag: Sample", 1, "'tag' must be a lower_snake"),
        (GOOD, "ttl: 1h", "ttl: 1h\nparams: {n: [1]}", 4, "'params.n' must be a number or a"),
        (GOOD, "ttl: 1h", "ttl: 1h\nparams: {n: 2 days}", 4, "bad duration for 'params.n'"),
        (GOOD, "ttl: 1h", "ttl: 1h\nparams: {ips: 2}", 6, "feature 'ips' has the name of a"),
        (GOOD, "when: ips >= 3", "when: {anyy: [ips >= 3]}", 6, "'when' must be an expression"),
        (GOOD, "when: ips >= 3", "when: {any: []}", 6, "'when.any' must not be empty"),
        (GOOD, "when: ips >= 3", "when: {not: ips >= 3, all: [ips > 1]}", 6, "'when' must be"),
        (GOOD, "when: ips >= 3\n", "", 1, "exactly one of 'when' (a condition) or 'absence'"),
        (GOOD, "when: ips >= 3", "when: ips >= 3\ncoupon: {}", 7, "'coupon' only goes with"),
        (ABSENCE, "within: 15m", "within: 15m\n  iff: true", 5, "unknown key 'iff' (known: cart,"),
        (ABSENCE, "within: 15m", "witin: 15m", 5, "unknown key 'witin' (known: cart,"),
        (ABSENCE, "  within: 15m\n", "", 5, "'absence.within' is required"),
        (ABSENCE, "{on: orders}", "{on: orders, wher: {}}", 6, "unknown key 'wher' (known: on,"),
        (ABSENCE, "{on: orders}", "{on: order}", 6, "'absence.stop.on' must be one of"),
        (ABSENCE, "{on: orders}", "{on: orders, where: {staus: paid}}", 6, "no field 'staus'"),
        (ABSENCE, "match: cart_id", "match: cart", 5, "'absence.match': browse events have no"),
        (ABSENCE, "within: 15m", "within: 15m + 1", 5, "'absence.within': cannot"),
        (ABSENCE, "within: 15m", "within: 15m\n  if: {any: 3}", 9, "'absence.if.any' must be"),
        (ABSENCE, "discount_pct: 10,", "discount: 10,", 9, "unknown key 'discount' (known: d"),
        (ABSENCE, "discount_pct: 10,", "discount_pct: 150,", 9, "'coupon.discount_pct' must be"),
        (ABSENCE, "discount_pct: 10,", "discount_pct: lots,", 9, "'coupon.discount_pct' must be"),
        (ABSENCE, "valid_for: 1h", "valid_for: 1 hour", 9, "bad duration for 'coupon.valid_for'"),
        (ABSENCE, "ttl: 1h", "ttl: 1h\nclear: when_false", 1, "'clear: when_false' needs a 'when'"),
    ],
)
def test_a_typo_anywhere_in_a_rule_fails_with_file_line_rule_and_reason(
    tmp_path: Path, text: str, old: str, new: str, line: int, fragment: str
) -> None:
    assert old in text
    path = write(tmp_path, text.replace(old, new))
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: rule 'sample': "), message
    assert fragment in message, message
    assert "\n" not in message


def test_an_error_in_a_later_rule_of_a_file_gives_that_rule_s_line(tmp_path: Path) -> None:
    second = GOOD.replace("rule: sample", "rule: other").replace("1h}", "1h, cap: lots}")
    path = write(tmp_path, GOOD + "---\n" + second)
    with pytest.raises(RuleError, match=r"sample\.yaml:12: rule 'other': 'features\.ips\.cap'"):
        load_rules(path)


def test_a_feature_without_a_kind_names_every_kind_the_compiler_knows(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("distinct: ip, ", ""))
    with pytest.raises(RuleError, match="needs exactly one of: " + ", ".join(KINDS)):
        load_rules(path)


# State keys of the catalogue's features before rule files were parsed into typed
# specs; a changed key would start every user's feature state afresh.
FEATURE_KEYS = {
    "brand_loyal": {"paid_orders": "8296fd", "top_brand_orders": "6a1e6a"},
    # v2 (issue 8): card removals are not card use, so the features changed.
    "card_hopping": {
        "cards_used": "2d0e0d",
        "cards_added": "bf8c55",
        "cards_seen": "6ce61f",
        "cards_not_added": "f01d0d",
    },
    "churn_risk": {"paid_orders": "0d2f43", "usual_gap": "1281c6"},
    "coupon_hunter": {"paid_orders": "0d2f43", "new_user_promos": "524992"},
    "dispute_prone": {"orders": "ec47d5", "complaints": "36601a"},
    "frustrated": {
        "failed_payments": "4e6281",
        "empty_searches": "9bdfd0",
        "rage_clicks": "c7395b",
        "complaints": "35b043",
    },
    "high_value": {"recent_orders": "b5cec8", "paid_orders": "0d2f43", "spend": "dc9d1e"},
    "ip_hopping": {"ips": "08b208", "countries": "b81055"},
    "night_owl": {"orders": "ec47d5", "night_orders": "8a2720"},
    "price_sensitive": {"paid_orders": "0d2f43", "with_coupon": "4dd4f4"},
    "rapid_spender": {"top_up_then_spend": "6423da"},
    "whale": {"largest_order": "783630"},
    "window_shopper": {"product_views": "0ec960", "orders": "a66e3d"},
}


def test_feature_state_keys_are_those_stored_by_earlier_versions() -> None:
    ruleset = load_rules(ROOT / "rules")
    keys = {
        rule.name: {name: feature.key for name, feature in rule.features.items()}
        for rule in ruleset.rules
        if rule.features
    }
    assert keys == FEATURE_KEYS


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


def test_the_streams_a_rule_may_name_are_the_input_contracts() -> None:
    assert typing.get_args(Stream) == tuple(STREAMS)
