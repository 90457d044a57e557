"""The live worker: the Faust shell that moves bytes in and out of the engine.

Reading order: :mod:`~streamtags.live.app` (wiring: the Faust app, the agent,
timers), :mod:`~streamtags.live.intake` (one batch: decode, engine, dead
letters, metrics), :mod:`~streamtags.live.tagger` (engine partitions,
coalesced state writes, the one owner of flush-and-ack, idle users),
:mod:`~streamtags.live.backlog` (held and idle input streams),
:mod:`~streamtags.live.outputs` (output records, size limits, resends, the
trigger ledger and tag sink), :mod:`~streamtags.live.cache` (the state
cache's memory budget), :mod:`~streamtags.live.offsets` (what the idle sweep
may forget), :mod:`~streamtags.live.health` (Kafka and Redis up or
down, ``/health``) and :mod:`~streamtags.live.quiet_logs` (repeated warnings
held back),
:mod:`~streamtags.live.seams` (the tagger's I/O edges as Protocols) and
:mod:`~streamtags.live.twins` (their in-memory twins, for tests),
:mod:`~streamtags.live.table_store` (raw access to the state table and its
changelog), :mod:`~streamtags.live.faust_internals` (every private Faust API
used, in one place), :mod:`~streamtags.live.web` (the pages),
:mod:`~streamtags.live.topics` (creating and checking topics),
:mod:`~streamtags.live.kafka_client` (how every Kafka client connects and logs in),
:mod:`~streamtags.live.producing` (sending recordings) and
:mod:`~streamtags.live.metrics`.
"""

__all__: list[str] = []
