"""The ``streamtags`` command line: :mod:`~streamtags.cli.main` (entry point,
worker, produce, schemas, stack), :mod:`~streamtags.cli.rules` (offline rule
commands) and :mod:`~streamtags.cli.live` (tags, watch, simulate, score)."""

from streamtags.cli.main import main

__all__ = ["main"]
