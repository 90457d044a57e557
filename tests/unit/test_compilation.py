"""A compiled (mypyc) module never runs in place of a source edited since it was built."""

from __future__ import annotations

import hashlib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import streamtags.engine
from streamtags.compilation import check_sources, is_compiled, stale_sources
from streamtags.engine import partition

SUFFIX = EXTENSION_SUFFIXES[0]  # what this interpreter imports first, e.g. .cpython-311-...so


def _package(tmp_path: Path) -> Path:
    """A package with one module, ``engine/partition.py``, compiled beside its source."""
    package = tmp_path / "streamtags"
    (package / "engine").mkdir(parents=True)
    (package / "engine" / "partition.py").write_text("X = 1\n")
    (package / "engine" / f"partition{SUFFIX}").write_bytes(b"\x7fELF")
    return package


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_extension_built_from_the_source_beside_it_is_not_stale(tmp_path: Path) -> None:
    package = _package(tmp_path)
    recorded = {"streamtags/engine/partition.py": _sha256(package / "engine" / "partition.py")}
    assert stale_sources(package, recorded) == []


def test_a_source_edited_after_its_build_is_stale(tmp_path: Path) -> None:
    package = _package(tmp_path)
    recorded = {"streamtags/engine/partition.py": _sha256(package / "engine" / "partition.py")}
    (package / "engine" / "partition.py").write_text("X = 2\n")
    assert stale_sources(package, recorded) == ["streamtags/engine/partition.py"]


def test_an_extension_with_no_record_of_its_source_is_stale(tmp_path: Path) -> None:
    assert stale_sources(_package(tmp_path), {}) == ["streamtags/engine/partition.py"]


def test_the_shared_library_and_other_interpreters_builds_are_not_checked(tmp_path: Path) -> None:
    package = tmp_path / "streamtags"
    (package / "engine").mkdir(parents=True)
    (package / "engine" / "partition.py").write_text("X = 1\n")
    (package / "engine" / "partition.cpython-20-other.so").write_bytes(b"")
    (package / f"_engine__mypyc{SUFFIX}").write_bytes(b"")  # no source of its own
    assert stale_sources(package, {}) == []


def test_this_checkout_runs_no_stale_build() -> None:
    check_sources()  # importing streamtags ran it already; a stale build would have raised


def test_the_engine_says_whether_it_runs_compiled() -> None:
    assert streamtags.engine.COMPILED is is_compiled(partition)
    assert is_compiled(partition) == partition.__file__.endswith(tuple(EXTENSION_SUFFIXES))
    assert not is_compiled(pytest)
