"""The live worker: the Faust shell that moves bytes in and out of the engine.

Reading order: :mod:`~streamtags.live.app` (the Faust app, agent, timers and
pages), :mod:`~streamtags.live.tagger` (engine partitions, coalesced state
writes, outputs), :mod:`~streamtags.live.table_store` (raw access to the
state table and its changelog), :mod:`~streamtags.live.topics` (creating and
checking topics), :mod:`~streamtags.live.producing` (sending recordings) and
:mod:`~streamtags.live.metrics`.
"""

__all__: list[str] = []
