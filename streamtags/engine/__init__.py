"""The pure core: ``(state, events, now) -> (state, tag changes, coupon triggers)``.

Synchronous and free of I/O (no Faust, Kafka, Redis or asyncio; an
import-linter contract in ``make test`` holds it to that).

To follow one event, start at :meth:`Partition.process
<streamtags.engine.partition.Partition.process>`: it moves the clock,
fires what became due, then runs the event's steps in order (stops,
features, starts, evaluation), each a call on one of the objects below.

The modules, each importing only those listed before it (no cycles):

1. :mod:`~streamtags.engine.state` - one user's state: named types in
   memory, compact versioned bytes on disk;
2. :mod:`~streamtags.engine.clock` - event time and watermarks;
3. :mod:`~streamtags.engine.output` - tag changes and coupon triggers (typed
   to the published contracts) and one call's :class:`Output`;
4. :mod:`~streamtags.engine.routing` - which features an event feeds;
5. :mod:`~streamtags.engine.tags` - evaluate rules; apply, renew, clear tags;
6. :mod:`~streamtags.engine.deadlines` - absence patterns: arm, cancel,
   fire, coupon triggers;
7. :mod:`~streamtags.engine.partition` - the :class:`Engine` (compiled
   rules, shared) and a :class:`Partition` (users, clock, wake-ups) that
   composes the steps.

:data:`COMPILED` says whether these modules run compiled by mypyc
(``setup.py``; decision 0008) or interpreted; the behaviour is the same.
"""

from typing import Final

from streamtags.compilation import is_compiled
from streamtags.engine import partition
from streamtags.engine.partition import Change, Engine, Output, Partition, Trigger

#: True when the engine runs as mypyc-compiled extension modules (decision 0008), False
#: when it runs interpreted (a pure build: no C compiler, or ``STREAMTAGS_PURE=1``).
COMPILED: Final = is_compiled(partition)

__all__ = ["COMPILED", "Change", "Engine", "Output", "Partition", "Trigger"]
