"""What crosses the product's edges: input events, output records, their bytes.

Reading order: :mod:`~streamtags.contracts.events` (the four input streams),
:mod:`~streamtags.contracts.values` (the strict, bounded value types their
fields use: ids, event times, IP addresses, amounts, counts),
:mod:`~streamtags.contracts.records` (tag changes, coupon triggers, dead
letters), :mod:`~streamtags.contracts.codec` (bytes to events, records to
bytes; never raises on bad input) with its
:mod:`~streamtags.contracts.fast_path` (well-formed events validated with
the value types' native stand-ins first), :mod:`~streamtags.contracts.ingest` (a
batch of raw messages to events and dead letters),
:mod:`~streamtags.contracts.schemas` (JSON Schemas generated from the
models) and :mod:`~streamtags.contracts.recordings` (recorded JSON Lines
files). Pure: no Faust, Kafka client or Redis.
"""

__all__: list[str] = []
