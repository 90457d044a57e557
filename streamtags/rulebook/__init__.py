"""Rules: ``rules/*.yaml`` parsed, type-checked and compiled once, at load.

Reading order: :mod:`~streamtags.rulebook.loader` (files to compiled
:class:`Rule` objects, errors with file:line), :mod:`~streamtags.rulebook.spec`
(the typed shape of a rule file, and its JSON Schema),
:mod:`~streamtags.rulebook.documents` (YAML that remembers its lines; a
validation error's path turned into file:line and a reason),
:mod:`~streamtags.rulebook.expressions` (the condition language),
:mod:`~streamtags.rulebook.fields` (what rules may read from events,
``where`` filters) and :mod:`~streamtags.rulebook.features` (the per-user
rolling state primitives). Pure: no I/O beyond reading the rule files.
"""

from streamtags.errors import RuleError
from streamtags.rulebook.loader import Rule, Ruleset, load_rules

__all__ = ["Rule", "RuleError", "Ruleset", "load_rules"]
