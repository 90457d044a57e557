"""Every error streamtags raises on purpose, in one tree.

::

    StreamtagsError
    ├── LoadError                 found at start-up or when a file is read; fix the file
    │   ├── SettingsError         a STREAMTAGS_* variable holds an unusable value
    │   ├── RuleError             a rule file: says file:line, rule and reason
    │   │   ├── ExpressionError   a condition or duration does not parse or type-check
    │   │   └── FeatureSpecError  a feature or ``where`` filter cannot be compiled
    │   ├── ScenarioError         a scenario file: says file:line and reason
    │   ├── RecordingError        a recorded JSON Lines file has a line it cannot use
    │   ├── TopicMismatch         a Kafka topic has the wrong partition count
    │   ├── KafkaUnavailable      no broker answered, or the brokers refused the credentials
    │   └── StaleBuildError       a compiled module was built from other sources: rebuild
    └── DataError                 found in the data while running; never stops a worker
        ├── InvalidEvent          an input message breaks the contract (dead-lettered)
        ├── StateFormatError      stored state bytes cannot be read
        └── EngineError           a rule failed on a valid event (dead-lettered; a bug)

Load-time errors stop the process with one line (the CLI maps them to exit
code 2); data-time errors are handled per event or per record and counted.
``ExpressionError`` and ``FeatureSpecError`` are raised without a location
by the compilers and re-raised as a located ``RuleError`` by the loader.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "DataError",
    "EngineError",
    "ErrorKind",
    "ExpressionError",
    "FeatureSpecError",
    "InvalidEvent",
    "KafkaUnavailable",
    "LoadError",
    "RecordingError",
    "RuleError",
    "ScenarioError",
    "SettingsError",
    "StaleBuildError",
    "StateFormatError",
    "StreamtagsError",
    "TopicMismatch",
]


class StreamtagsError(Exception):
    """Base of every error streamtags raises on purpose."""


class LoadError(StreamtagsError, ValueError):
    """Something read at start-up (settings, rules, scenarios, topics) cannot be used."""


class DataError(StreamtagsError, ValueError):
    """Something in the data cannot be used; handled per event, never fatal."""


class SettingsError(LoadError):
    """An environment variable holds a value streamtags cannot use."""


class RuleError(LoadError):
    """A rule cannot be loaded: says where (file:line), which rule, and why."""

    def __init__(
        self, path: object = "", line: int = 0, rule: str | None = None, reason: str = ""
    ) -> None:
        where = f"{path}:{line}"
        who = f" rule {rule!r}:" if rule else ""
        super().__init__(f"{where}:{who} {reason}")
        self.path = str(path)
        self.line = line
        self.rule = rule
        self.reason = reason


class ExpressionError(RuleError):
    """An expression does not parse or does not type-check (no location yet)."""

    def __init__(self, reason: str) -> None:
        StreamtagsError.__init__(self, reason)
        self.path, self.line, self.rule, self.reason = "", 0, None, reason


class FeatureSpecError(RuleError):
    """A feature or filter definition cannot be compiled (no location yet)."""

    def __init__(self, reason: str) -> None:
        StreamtagsError.__init__(self, reason)
        self.path, self.line, self.rule, self.reason = "", 0, None, reason


class ScenarioError(LoadError):
    """A scenario file is malformed; the message says file:line and why."""


class RecordingError(LoadError):
    """A recorded file has a line that names no known stream."""


class TopicMismatch(LoadError):
    """A topic exists with a partition count streamtags cannot use."""


class KafkaUnavailable(LoadError):
    """No bootstrap server could be reached, spoken to and logged in to; says why for each."""


class StaleBuildError(LoadError):
    """A compiled (mypyc) module was not built from the source beside it: says which, and
    how to rebuild (raised when ``streamtags`` is imported; see :mod:`streamtags.compilation`)."""


ErrorKind = Literal[
    "not_json",
    "not_object",
    "invalid",
    "wrong_key",
    "future_timestamp",
    "too_late",
    "engine_error",
    "too_large",
]
"""Why an input message was dead-lettered (the ``error_kind`` of a dead letter).

``not_json``: unparseable; ``not_object``: JSON but not an object; ``invalid``:
failed the contract; ``wrong_key``: a valid event whose message key is not its
``user_id`` (null keys too); ``future_timestamp``: stamped further ahead of the
worker's wall clock than the allowed skew; ``too_late``: older than the rules
can still use; ``engine_error``: valid, but a rule failed on it (a bug);
``too_large``: a record the worker would write (a user's state, a tag change, a
coupon trigger) is over the producer's size limit and was not written; the
letter's value is that record (cut to fit), its key the user, its topic where
the record would have gone, its offset -1.
"""


class InvalidEvent(DataError):
    """An input message broke the contract; ``reason`` says how, for people."""

    def __init__(self, reason: str, kind: ErrorKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: ErrorKind = kind


class StateFormatError(DataError):
    """Stored state bytes are not a state this version can read."""


class EngineError(DataError):
    """A rule failed on a valid event: a bug, reported through the dead-letter topic."""
