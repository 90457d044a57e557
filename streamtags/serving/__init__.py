"""Live tags for other services: the Redis layout, the sink that writes it, lookup.

Reading order: :mod:`~streamtags.serving.redis_layout` is the one definition
of the layout (versioned fields, tombstones, the one reader rule);
:mod:`~streamtags.serving.write_queue` holds writes while Redis is away;
:mod:`~streamtags.serving.redis_sink` writes tag changes to Redis;
:mod:`~streamtags.serving.projection` projects live tags from state again
when Redis lost them; :mod:`~streamtags.serving.lookup` is the client
checkout uses. The lookup client imports no Faust (an import-linter
contract checks it).
"""

__all__: list[str] = []
