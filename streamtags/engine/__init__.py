"""The pure core: ``(state, events, now) -> (state, tag changes, coupon triggers)``.

Synchronous and free of I/O (no Faust, Kafka, Redis or asyncio; an
import-linter contract in ``make test`` holds it to that). Reading order:
:mod:`~streamtags.engine.state` (one user's state and its bytes),
:mod:`~streamtags.engine.clock` (event time and watermarks),
:mod:`~streamtags.engine.partition` (one partition's users: the per-event
steps), :mod:`~streamtags.engine.lifecycle` (tag changes) and
:mod:`~streamtags.engine.deadlines` (absence patterns, coupon triggers).
"""

from streamtags.engine.partition import Change, Engine, Output, Partition, Trigger

__all__ = ["Change", "Engine", "Output", "Partition", "Trigger"]
