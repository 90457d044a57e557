"""Fixtures of the fault suite (``make faults``): the integration fixtures, plus the stack.

The faults kill the stack's own Kafka broker and Redis server (started by
``stack/stack.sh``, pids in ``.stack/``) and start them again with
``stack/stack.sh up``; any other test running against the same stack would
break, so these tests run only when ``tests/faults`` is named on the command
line (``make faults`` does). A bare ``pytest`` or ``make test`` leaves them out.
The stack's ports follow ``STREAMTAGS_KAFKA_PORT``, ``STREAMTAGS_REDIS_PORT`` etc.
(see ``stack/stack.sh``); point ``STREAMTAGS_KAFKA_BOOTSTRAP`` and
``STREAMTAGS_REDIS_URL`` at them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, names, real_stack, worker_factory

__all__ = ["Stack", "names", "real_stack", "stack", "worker_factory"]

FAULTS = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave the faults out unless ``tests/faults`` (or a file in it) was named."""
    if FAULTS not in (collection_path, *collection_path.parents):
        return None
    named = [Path(arg.split("::")[0]).resolve() for arg in config.invocation_params.args]
    wanted = any(p == FAULTS or FAULTS in p.parents for p in named)
    return None if wanted else True


@dataclass
class Stack:
    """The stack's Kafka and Redis processes: kill them, start them again."""

    root: Path

    def pid(self, name: str) -> int:
        """The pid of the stack's ``kafka`` or ``redis``; fails if the stack did not start it."""
        path = self.root / ".stack" / f"{name}.pid"
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            pytest.fail(
                f"the fault suite kills the stack's own {name}, but {path} names no running "
                f"process: start the stack with `make stack-up` (stack/stack.sh up)",
                pytrace=False,
            )
        return pid

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and wait until it is gone."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} (pid {pid}) survived SIGKILL for 10 s")

    def forget_redis_data(self) -> None:
        """Delete Redis' files (append-only log and snapshot): it restarts empty."""
        data = self.root / ".stack" / "redis"
        shutil.rmtree(data / "appendonlydir", ignore_errors=True)
        for name in ("appendonly.aof", "dump.rdb"):
            (data / name).unlink(missing_ok=True)

    def up(self) -> None:
        """``stack/stack.sh up``: start what is not running, wait until it answers."""
        subprocess.run(
            [str(self.root / "stack" / "stack.sh"), "up"],
            check=True,
            capture_output=True,
            timeout=180,
        )


@pytest.fixture
def stack() -> Stack:
    """The stack, checked to be ``stack/stack.sh``'s own (its pids are known)."""
    found = Stack(ROOT)
    found.pid("kafka")
    found.pid("redis")
    return found
