"""YAML documents that remember their lines, and typed specs validated against them.

Rule and scenario files are read here into plain dicts and lists that know
the line (1-based) they start on; a pydantic model then validates each
document. A validation error's ``loc`` (the path of keys and indexes to the
bad value) is walked through the document to the nearest mapping or list,
whose line the error reports, and is turned into one sentence an analyst
can act on: ``'features.ips.cap' must be a valid integer, got 'lots'``.

Only ``true``/``false`` are booleans: YAML 1.1 would read the key ``on``
(and yes/no/off) as a bool, which is the word rules use for streams.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from streamtags.errors import LoadError

__all__ = [
    "PROBLEM",
    "Fail",
    "LineDict",
    "LineList",
    "Loc",
    "bad_duration",
    "explain",
    "line_of",
    "problem",
    "read_documents",
    "unknown_keys",
    "validated",
]

Loc = Sequence[str | int]
"""A path into a document: mapping keys and list indexes, as in pydantic's ``loc``."""

Fail = Callable[[int, str], LoadError]
"""Builds the caller's located error from a line (1-based; 0 = unknown) and a reason."""

Model = TypeVar("Model", bound=BaseModel)


class LineDict(dict[str, Any]):
    """A YAML mapping that remembers the line it starts on (1-based)."""

    line: int = 0


class LineList(list[Any]):
    """A YAML sequence that remembers the line it starts on (1-based)."""

    line: int = 0


class _Loader(yaml.SafeLoader):
    """A safe loader building :class:`LineDict` and :class:`LineList`, YAML 1.2 booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    mapping = LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if str(key) in mapping:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        mapping[str(key)] = loader.construct_object(value_node, deep=True)
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    sequence = LineList(loader.construct_object(child, deep=True) for child in node.value)
    sequence.line = node.start_mark.line + 1
    return sequence


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def read_documents(path: Path, fail: Fail) -> list[tuple[int, Any]]:
    """Every non-empty YAML document in ``path`` with the number it has in the file (1-based).

    Raises ``fail(line, reason)`` when the file cannot be read or is not valid YAML.
    """
    try:
        documents = list(yaml.load_all(path.read_text(), Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise fail(line, f"not valid YAML: {exc.problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(0, f"cannot read: {exc}") from None
    return [(number, doc) for number, doc in enumerate(documents, start=1) if doc is not None]


def line_of(document: Any, loc: Loc) -> int:
    """The line of the nearest mapping or list on ``loc``'s path through ``document``.

    Steps that name nothing in the document (pydantic's union tags, a key that
    is missing) are skipped: the error is then reported on its container.
    """
    line = getattr(document, "line", 0)
    node = document
    for step in loc:
        child = _child(node, step)
        if child is _ABSENT:
            continue
        node = child
        line = getattr(node, "line", line)
    return line


_ABSENT = object()


def _child(node: Any, step: str | int) -> Any:
    if isinstance(node, dict) and isinstance(step, str) and step in node:
        return node[step]
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return _ABSENT


def _path(document: Any, loc: Loc, *, missing: bool = False) -> str:
    """The steps of ``loc`` found in ``document``, dotted; ``missing``: plus the last step.

    Other steps (pydantic's union tags) are left out: they are not in the file.
    """
    names: list[str] = []
    node = document
    for step in loc:
        child = _child(node, step)
        if child is not _ABSENT:
            names.append(str(step))
            node = child
    if missing and loc:
        names.append(str(loc[-1]))  # a required key that is not there
    return ".".join(names)


def problem(predicate: str) -> PydanticCustomError:
    """A validation error whose reason reads ``'<where>' <predicate>``.

    The predicate is the whole complaint (``must be a number or a duration,
    got True``): unlike pydantic's own errors, nothing is appended to it.
    """
    return PydanticCustomError(PROBLEM, "{predicate}", {"predicate": predicate})


def bad_duration(reason: str) -> PydanticCustomError:
    """A validation error whose reason reads ``bad duration for '<where>': <reason>``."""
    return PydanticCustomError(_DURATION, "{reason}", {"reason": reason})


def unknown_keys(unknown: Iterable[str], known: Iterable[str]) -> PydanticCustomError:
    """A validation error naming misspelt or unsupported keys and the keys that are known."""
    unknown = list(unknown)
    keys = ", ".join(repr(key) for key in unknown)
    noun = "key" if len(unknown) == 1 else "keys"
    reason = f"unknown {noun} {keys} (known: {', '.join(sorted(known))})"
    return PydanticCustomError(_UNKNOWN, "{reason}", {"reason": reason})


PROBLEM = "problem"
"""Error type of :func:`problem`; use it as a ``Discriminator``'s ``custom_error_type``."""
_DURATION = "duration"
_UNKNOWN = "unknown_keys"


def explain(document: Any, error: ErrorDetails) -> tuple[int, str]:
    """One pydantic error as ``(line, reason)``, the reason written for analysts."""
    loc, kind, message, got = error["loc"], error["type"], error["msg"], error.get("input")
    line = line_of(document, loc)
    if loc and loc[-1] == "[key]":  # a mapping key, not a value, is wrong
        return line, f"key {got!r} in '{_path(document, loc[:-2])}' {_predicate(kind, message)}"
    if kind == "missing":
        return line, f"'{_path(document, loc, missing=True)}' is required"
    where = _path(document, loc)
    if kind == _UNKNOWN:
        return line, message + (f" in '{where}'" if where else "")
    if kind == _DURATION:
        return line, f"bad duration for '{where}': {message}"
    subject = f"'{where}'" if where else "the document"
    if kind == PROBLEM or isinstance(got, dict):
        return line, f"{subject} {_predicate(kind, message)}"
    return line, f"{subject} {_predicate(kind, message)}, got {got!r}"


def _predicate(kind: str, message: str) -> str:
    if kind == "literal_error" and " or " in message:
        return message.replace("Input should be", "must be one of", 1)
    if kind == "too_short":
        return "must not be empty"
    return message.replace("Input should be", "must be", 1)


def validated(model: type[Model], document: Any, fail: Fail) -> Model:
    """``document`` validated as ``model``; the first problem (by line) raised via ``fail``."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        found = [explain(document, error) for error in exc.errors(include_url=False)]
        line, reason = min(found, key=lambda item: item[0])
        raise fail(line, reason) from None
