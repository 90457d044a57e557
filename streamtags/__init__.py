"""streamtags: live customer tags from Kafka event streams.

Reading order, following one event from the top of the tree to the bottom:

1. :mod:`streamtags.events` - input contracts (orders, browse, logins, accounts).
2. :mod:`streamtags.codec` - bytes to validated events, records to bytes;
   :mod:`streamtags.ingest` - a batch of raw messages to events and dead letters.
3. :mod:`streamtags.rulebook` - ``rules/*.yaml`` parsed and checked at load;
   :mod:`streamtags.expressions` - the condition language;
   :mod:`streamtags.fields` - what rules may read from events, ``where`` filters;
   :mod:`streamtags.features` - per-user rolling state (windows, distinct sets,
   buckets, sequences, gaps).
4. :mod:`streamtags.state` - one user's state and its compact bytes.
5. :mod:`streamtags.engine` - the pure core: ``(state, events, now) -> (state, tag
   changes, coupon triggers)``, with :mod:`streamtags.lifecycle` (applied, renewed,
   cleared, evidence), :mod:`streamtags.absence` (deadlines and coupons) and
   :mod:`streamtags.clock` (event time, watermarks).
6. :mod:`streamtags.records` - the output contracts (tag change, coupon trigger,
   dead letter); :mod:`streamtags.schemas` - their JSON Schemas.
7. :mod:`streamtags.backtest` and :mod:`streamtags.scenarios` - the engine offline.
8. :mod:`streamtags.worker` - the Faust shell around :mod:`streamtags.live` (engine
   partitions, coalesced state writes via :mod:`streamtags.table_store`, outputs);
   :mod:`streamtags.redis_layout`, :mod:`streamtags.redis_sink` - the live lookup store.
9. :mod:`streamtags.lookup` - the client the checkout service uses;
   :mod:`streamtags.cli` (with ``rules_cli``, ``live_cli``) - the command line;
   :mod:`streamtags.simulate` - traffic; :mod:`streamtags.producing` - recordings.

Configuration: :mod:`streamtags.settings`. Kafka topics: :mod:`streamtags.topics`.
"""

__all__: list[str] = []
