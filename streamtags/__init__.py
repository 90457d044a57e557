"""streamtags: live customer tags from Kafka event streams.

Reading order, following one event from the top of the tree to the bottom
(each subpackage's docstring maps its own modules):

1. :mod:`streamtags.contracts` - input events, output records, the codec
   (bytes to events, never raising), ingest (a batch of raw messages to
   events and dead letters), JSON Schemas, recorded files.
2. :mod:`streamtags.rulebook` - ``rules/*.yaml`` loaded, checked and compiled
   once: the condition language, what rules may read from events, and the
   per-user rolling features.
3. :mod:`streamtags.engine` - the pure core: one user's state, the
   partition clock, the per-event steps, tag lifecycle and deadlines.
4. :mod:`streamtags.offline` - the engine on a simulated clock: replaying
   recordings, analysts' scenarios, simulated traffic.
5. :mod:`streamtags.live` - the Faust worker: agent, tagger, state table,
   topics, metrics.
6. :mod:`streamtags.serving` - the Redis layout, the sink that writes it and
   the lookup client checkout uses.
7. :mod:`streamtags.cli` - the command line.

Across all of them: :mod:`streamtags.settings` (one frozen settings object)
and :mod:`streamtags.errors` (one exception tree); :mod:`streamtags.compilation`
tells whether the engine runs compiled (mypyc) and refuses a stale build. The layers are enforced
by import-linter contracts in ``pyproject.toml``: lower layers never import
higher ones, and the engine, contracts, rulebook and offline replay import
no Faust, Kafka client or Redis.
"""

from streamtags.compilation import check_sources

# Before any compiled module is imported: an edited source must never run as its old build.
check_sources()

__all__: list[str] = []
