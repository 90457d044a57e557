"""The ``streamtags`` command line: :mod:`~streamtags.cli.main` (entry point,
worker, produce, stack; errors to exit codes), :mod:`~streamtags.cli.schemas`
(every published JSON Schema), :mod:`~streamtags.cli.rules` (offline rule
commands), :mod:`~streamtags.cli.live` (tags, watch, simulate, score) and
:mod:`~streamtags.cli.redis` (redis resync)."""

from streamtags.cli.main import main

__all__ = ["main"]
