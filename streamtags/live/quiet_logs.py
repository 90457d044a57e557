"""Repeated log lines, logged once per interval instead of many times a second.

During a broker outage aiokafka and Faust log the same failure for every
connection attempt, fetch, heartbeat and record (about a hundred ERROR lines
a second were measured). :class:`RepeatFilter`, installed on the worker's
log handlers, lets through:

- one WARNING-or-worse record per logger and message template per
  interval, and at most a few per library (``aiokafka``, ``faust``, ...:
  some build a new message each time and log from many loggers);
- one INFO record per logger and template per interval from libraries
  (aiokafka logs a commit retry per partition), never holding streamtags'
  own INFO lines, which are deliberate.

It counts what it holds back and says how many when that template next gets
through. DEBUG is never held. The outage itself is reported once by
:mod:`streamtags.live.health`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RepeatFilter", "install"]

#: The record attribute that remembers the decision for the other handlers.
_DECISION = "_streamtags_repeat_filter"
#: Loggers whose INFO lines are never held, and whose WARNING+ budget is per logger.
_OWN = "streamtags"
#: Forget templates not seen for this many intervals (bounds the filter's memory).
_FORGET_AFTER_INTERVALS = 10


@dataclass(slots=True)
class _Seen:
    passed_at: float
    held: int = 0


class RepeatFilter(logging.Filter):
    """Holds back repeated records (see the module docstring): one per (logger,
    template) per ``interval_s``, and at most ``per_logger`` WARNING+ records per
    library per ``interval_s``."""

    def __init__(
        self,
        *,
        interval_s: float = 60.0,
        per_logger: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_held: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        #: wall-clock seconds
        self.interval_s = interval_s
        self.per_logger = per_logger
        self.clock = clock
        #: called with the logger's name for every record held back
        self.on_held = on_held
        self.held = 0
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._logger_window: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True to log ``record``; False holds it back (and counts it)."""
        if record.levelno < logging.INFO:
            return True
        if record.levelno < logging.WARNING and record.name.startswith(_OWN):
            return True
        decided = record.__dict__.get(_DECISION)
        if decided is None:  # each handler asks again about the same record
            decided = record.__dict__[_DECISION] = self._decide(record)
        return bool(decided)

    def _decide(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        key = (record.name, str(record.msg))
        seen = self._seen.get(key)
        if seen is not None and now - seen.passed_at < self.interval_s:
            return self._hold(record, seen)
        if record.levelno >= logging.WARNING and not self._library_allows(record.name, now):
            return self._hold(record, seen or self._seen.setdefault(key, _Seen(now)))
        if seen is not None and seen.held:
            record.msg = (
                f"{record.msg} [{seen.held} more like this in the last {self._span(seen, now)}]"
            )
        self._seen[key] = _Seen(now)
        if len(self._seen) > 1000:
            self._forget_old(now)
        return True

    def _hold(self, record: logging.LogRecord, seen: _Seen) -> bool:
        seen.held += 1
        self.held += 1
        if self.on_held is not None:
            self.on_held(record.name)
        return False

    def _library_allows(self, name: str, now: float) -> bool:
        """Whether the logger's library (its first name, or the logger itself for our
        own) may log one more WARNING+ record in this interval."""
        library = name if name.startswith(_OWN) else name.split(".", 1)[0]
        started, passed = self._logger_window.get(library, (now, 0))
        if now - started >= self.interval_s:
            started, passed = now, 0
        if passed >= self.per_logger:
            return False
        self._logger_window[library] = (started, passed + 1)
        return True

    @staticmethod
    def _span(seen: _Seen, now: float) -> str:
        return f"{now - seen.passed_at:.0f} s"

    def _forget_old(self, now: float) -> None:
        horizon = now - self.interval_s * _FORGET_AFTER_INTERVALS
        for key in [k for k, seen in self._seen.items() if seen.passed_at < horizon]:
            del self._seen[key]


def install(log_filter: logging.Filter, logger: logging.Logger | None = None) -> int:
    """Add ``log_filter`` to every handler of ``logger`` (the root logger by default),
    where it sees every propagated record; returns the handlers it was added to."""
    handlers = (logger or logging.getLogger()).handlers
    for handler in handlers:
        if log_filter not in handler.filters:
            handler.addFilter(log_filter)
    return len(handlers)
