"""Live tags for other services: the Redis layout, the sink that writes it, lookup.

:mod:`~streamtags.serving.redis_layout` is the one definition of the layout,
:mod:`~streamtags.serving.redis_sink` writes tag changes to it and
:mod:`~streamtags.serving.lookup` is the client checkout uses. The lookup
client imports no Faust (an import-linter contract checks it).
"""

__all__: list[str] = []
