"""Scale-out: one streamtags worker, then N in one consumer group, drain the same backlog.

Issue 10 asks that two workers on one machine (one per core) reach at least
1.7x one worker's throughput. One run produces a backlog once (the one
``bench/compare.py`` drains: default 200,000 JSON events over 50,000 users on
4 topics x 8 partitions, keyed by ``user_id``), then, for each worker count
in ``--workers`` (default ``1,2``), starts that many
``python -m streamtags worker`` processes together, with the whole ``rules/``
catalogue and RocksDB, one new app id (= consumer group) per count, and each
worker its own data directory and web port. Every group reads the backlog
from the start.

Timing. Workers started together do not own their partitions together: the
first to join takes all eight and starts reading, and the group rebalances
when the others join (partitions move; their state is rebuilt from the
changelog). The clock therefore starts at the first poll at which the group
has *settled* — every worker's ``/health`` lists partitions, together they
are all eight, each once, and none says ``rebalancing`` — and the summed
counter has moved; the events consumed before that are not timed. The clock
stops at the first poll at which the workers' summed
``streamtags_events_consumed_total`` (plus dead letters) reaches the backlog
size. Workers are polled every 0.2 s, so both ends may be seen up to 0.2 s
late. CPU per event is the summed user+system CPU time of the worker
processes (all threads) over the same window, divided by the events timed.

Reported beside it, for the same run: the throughput from the first poll
at which the summed counter moved (rebalance included), how long the group
took to settle after the launch, and the *rebalance* time: from the first
event consumed to the settled group (0 for one worker, which owns its
partitions before it reads). After the clock stops the script waits until
the group has committed every input partition to its end (the check that
every event was consumed), then for the reorder buffer to let the last
events out, and reads the tag records emitted; consumed events beyond the
backlog size are redeliveries (a partition moved before its offsets were
committed).

With ``--gated`` each worker count gets its own, empty topics instead: once
its group has settled the workers are frozen (SIGSTOP), the same backlog is
produced on its topics, and they are let go (SIGCONT), so every partition
is read by its final owner from the first event and no rebalance overlaps
the drain. Events then arrive as if live, with no backlog at assignment, so
the worker does not hold the streams to read them in event-time order: a
few events come more than the lateness behind their user's other streams
and are dead-lettered ``too_late`` (0.3 % at 60,000 events here).

Prints a table and writes bench/results/scale.json (machine, versions,
notes). Needs the stack: ``make bench-scale``, or

    .venv/bin/python bench/scale.py [--workers 1,2] [--events 200000] [--users 50000] [--gated]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare import (  # noqa: E402
    KAFKA,
    PARTITIONS,
    POLL_S,
    STREAMS,
    Contestant,
    clean_up,
    events_seen,
    free_port,
    machine,
    metric_sum,
    process_cpu_s,
    produce_backlog,
    start_worker,
    stop_worker,
    versions,
)
from streamtags.live.topics import ensure_topics  # noqa: E402
from streamtags.settings import Settings  # noqa: E402

__all__ = ["Drain", "Sample", "drain", "group_lag", "main", "report", "run_counts"]

#: how long the group may take, after the clock stops, to commit every partition to its end
COMMIT_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class Sample:
    """What the workers said at one poll."""

    #: ``time.perf_counter()`` seconds when the counters were read
    at_s: float
    #: events consumed or dead-lettered, summed over the workers
    consumed: float
    #: user+system CPU seconds, summed over the worker processes
    cpu_s: float
    #: per worker, the partitions its ``/health`` lists; None while it does not answer
    owned: tuple[tuple[int, ...] | None, ...]
    #: whether any worker's ``/health`` says it is rebalancing
    rebalancing: bool

    @property
    def settled(self) -> bool:
        """Every worker owns partitions, together all of them, each once, and none rebalances."""
        if self.rebalancing or any(not partitions for partitions in self.owned):
            return False
        numbers = sorted(n for partitions in self.owned for n in partitions or ())
        return numbers == list(range(PARTITIONS))


@dataclass(slots=True)
class Drain:
    """One worker count's run over the backlog: the polls that matter and what followed."""

    workers: int
    events: int
    #: ``time.perf_counter()`` seconds when the workers were started
    launched_s: float
    loadavg_before: float = 0.0
    #: the first poll at which the summed counter had moved
    first: Sample | None = None
    #: the first poll at which the group had settled
    settled: Sample | None = None
    #: the first poll settled with the counter moved: the clock starts here
    clock: Sample | None = None
    #: the first poll at which the summed counter reached the backlog size: the clock stops
    end: Sample | None = None
    #: polls after the clock started at which the assignment differed from the poll before
    assignment_changes_after_clock: int = 0
    #: seconds from the clock's stop until the group had committed every partition to its end
    committed_after_s: float | None = None
    #: summed counter once the group had committed everything
    final_consumed: float = 0.0
    #: tag records emitted, summed over the workers
    tag_records: float = 0.0
    #: input events dead-lettered, summed over the workers
    dead_lettered: float = 0.0
    #: longest seconds between two polls from the first event to the clock's stop: how
    #: late a mark may have been seen (a busy worker answers its web server late)
    max_poll_gap_s: float = 0.0
    #: the partitions each worker listed at the last poll at which all of them answered
    _owned: tuple[tuple[int, ...] | None, ...] = field(default=(), init=False, repr=False)
    _last_at_s: float = field(default=0.0, init=False, repr=False)

    def observe(self, sample: Sample) -> None:
        """Note the poll if it starts or stops something, or moves partitions after the start."""
        if self.first is not None and self.end is None:
            self.max_poll_gap_s = max(self.max_poll_gap_s, sample.at_s - self._last_at_s)
        self._last_at_s = sample.at_s
        if sample.consumed and self.first is None:
            self.first = sample
        if sample.settled and self.settled is None:
            self.settled = sample
        answered = None not in sample.owned
        if self.clock is not None and answered and sample.owned != self._owned:
            self.assignment_changes_after_clock += 1
        if self.clock is None and self.settled is not None and sample.consumed:
            self.clock = sample
        if answered:
            self._owned = sample.owned
        if sample.consumed >= self.events and self.end is None:
            self.end = sample

    def figures(self) -> dict[str, Any]:
        """The run's numbers for the table and the JSON (None where a mark was not reached)."""
        assert self.first is not None and self.end is not None
        found: dict[str, Any] = {
            "workers": self.workers,
            "loadavg_1m_before": self.loadavg_before,
            **_window(self.clock, self.end, self.events, prefix=""),
            **_window(self.first, self.end, self.events, prefix="from_first_"),
            "first_event_after_launch_s": round(self.first.at_s - self.launched_s, 2),
            "settled_after_launch_s": None,
            "rebalance_s": None,
            "assignment_changes_after_clock": self.assignment_changes_after_clock,
            "max_poll_gap_s": round(self.max_poll_gap_s, 2),
            "committed_to_end_after_s": self.committed_after_s,
            "redelivered": int(self.final_consumed - self.events),
            "tag_records": int(self.tag_records),
            "dead_lettered": int(self.dead_lettered),
        }
        if self.settled is not None:
            found["settled_after_launch_s"] = round(self.settled.at_s - self.launched_s, 2)
            found["rebalance_s"] = round(max(0.0, self.settled.at_s - self.first.at_s), 2)
        return found


def _window(start: Sample | None, end: Sample, events: int, *, prefix: str) -> dict[str, Any]:
    """Events timed, seconds, events/s and CPU from ``start`` to ``end`` (None if no window)."""
    timed = events - start.consumed if start is not None else 0
    if start is None or timed <= 0 or end.at_s <= start.at_s:
        keys = ("events_timed", "drain_s", "events_per_s", "cpu_us_per_event", "cores_busy")
        return {prefix + key: None for key in keys}
    drain_s, cpu_s = end.at_s - start.at_s, end.cpu_s - start.cpu_s
    return {
        prefix + "events_timed": int(timed),
        prefix + "drain_s": round(drain_s, 3),
        prefix + "events_per_s": round(timed / drain_s),
        prefix + "cpu_us_per_event": round(cpu_s / timed * 1e6, 2),
        prefix + "cores_busy": round(cpu_s / drain_s, 3),
    }


def _health(port: int) -> dict[str, Any] | None:
    """The worker's ``/health`` body; None while its web server does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except (OSError, ValueError):
        return None


def _sample(ports: list[int], pids: list[int]) -> Sample:
    consumed = sum(events_seen(port) for port in ports)
    at_s = time.perf_counter()
    cpu_s = sum(process_cpu_s(pid) for pid in pids)
    healths = [_health(port) for port in ports]
    return Sample(
        at_s=at_s,
        consumed=consumed,
        cpu_s=cpu_s,
        owned=tuple(None if h is None else tuple(h["partitions"]) for h in healths),
        rebalancing=any(h is not None and h["rebalancing"] for h in healths),
    )


async def group_lag(group: str, topics: list[str]) -> int:
    """Messages on ``topics`` past the offsets consumer group ``group`` has committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            [TopicPartition(topic, number) for topic in topics for number in range(PARTITIONS)]
        )
        committed = await admin.list_consumer_group_offsets(group)
        return sum(
            end - max(0, committed[tp].offset if tp in committed else 0) for tp, end in ends.items()
        )
    finally:
        await consumer.stop()
        await admin.close()


def _wait_committed(group: str, topics: list[str]) -> float | None:
    """Seconds until ``group`` has committed every partition of ``topics`` to its end, or None."""
    started = time.perf_counter()
    while time.perf_counter() - started < COMMIT_WAIT_S:
        if asyncio.run(group_lag(group, topics)) == 0:
            return round(time.perf_counter() - started, 2)
        time.sleep(0.5)
    return None


def _watch(
    run: Drain,
    workers: list[subprocess.Popen[bytes]],
    ports: list[int],
    *,
    tag: str,
    timeout_s: float,
    until: Callable[[Drain], bool],
) -> None:
    """Poll the workers until ``until(run)``: the group settled, or the backlog drained."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        for number, worker in enumerate(workers):
            if worker.poll() is not None:
                raise SystemExit(f"{tag}: worker {number} exited ({worker.returncode})")
        last = _sample(ports, [worker.pid for worker in workers])
        run.observe(last)
        if until(run):
            return
        time.sleep(POLL_S)
    seen = f"{last.consumed:,.0f}" if last else "nothing"
    raise SystemExit(f"{tag}: not done within {timeout_s:.0f} s ({seen} of {run.events:,})")


def _frozen(workers: list[subprocess.Popen[bytes]], produce: Callable[[], object]) -> None:
    """Call ``produce`` with every worker stopped (SIGSTOP), then let them go on (SIGCONT).

    Stopped for as long as producing takes, the workers miss heartbeats; the
    session timeout (30 s) is what must not pass.
    """
    for worker in workers:
        os.kill(worker.pid, signal.SIGSTOP)
    try:
        produce()
    finally:
        for worker in workers:
            os.kill(worker.pid, signal.SIGCONT)


def drain(
    contestant: Contestant,
    workers: int,
    rules_dir: Path,
    *,
    produce: Callable[[], object] | None = None,
) -> Drain:
    """Start ``workers`` workers in one new group on ``contestant``'s topics; time them.

    With ``produce``, the topics are empty at the start: once the group has
    settled the workers are frozen, ``produce`` fills the topics, and they
    drain it with their partitions already theirs (``--gated``).
    """
    tag = f"{workers}w"
    ports: list[int] = []
    while len(ports) < workers:  # two probes in a row may be given the same port
        if (port := free_port()) not in ports:
            ports.append(port)
    started: list[subprocess.Popen[bytes]] = []
    loadavg = os.getloadavg()[0]
    try:
        for number, port in enumerate(ports):
            data_dir = contestant.workdir / f"{tag}-data-{number}"
            env = contestant.worker_env(tag, rules_dir, port=port, data_dir=data_dir)
            started.append(start_worker(env, contestant.workdir / f"{tag}-{number}.log"))
        run = Drain(workers, contestant.events, time.perf_counter(), loadavg)
        watch = functools.partial(_watch, run, started, ports, tag=tag)
        if produce is not None:
            watch(timeout_s=contestant.timeout_s, until=lambda run: run.settled is not None)
            _frozen(started, produce)
        watch(timeout_s=contestant.timeout_s, until=lambda run: run.end is not None)
        topics = list(contestant.topics.values())
        run.committed_after_s = _wait_committed(f"{contestant.run}-{tag}", topics)
        # Events wait in the reorder buffer until the watermark passes them: let the
        # last ones out before counting the tags.
        time.sleep(Settings().lateness_ms / 1000 + 2)
        run.final_consumed = sum(events_seen(port) for port in ports)
        run.tag_records = sum(metric_sum(port, "streamtags_tag_changes_total") for port in ports)
        run.dead_lettered = sum(
            metric_sum(port, "streamtags_events_rejected_total") for port in ports
        )
        return run
    finally:
        for worker in started:
            worker.terminate()  # all at once: each waits for the others' leaving otherwise
        for worker in started:
            stop_worker(worker)


def _cell(value: Any, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def table(runs: list[dict[str, Any]]) -> list[str]:
    """The printed table, one line per worker count."""
    lines = [
        f"{'workers':>7}{'events/s':>10}{'ratio':>7}{'CPU us/ev':>11}{'cores':>7}"
        f"{'timed':>9}{'drain s':>9}{'| from 1st':>11}{'ratio':>7}{'settle s':>10}"
        f"{'rebal. s':>10}{'redeliv.':>10}{'tags':>9}"
    ]
    for r in runs:
        lines.append(
            f"{r['workers']:>7}{_cell(r['events_per_s'], ',', 10)}{_cell(r['ratio'], '.2f', 7)}"
            f"{_cell(r['cpu_us_per_event'], '.1f', 11)}{_cell(r['cores_busy'], '.2f', 7)}"
            f"{_cell(r['events_timed'], ',', 9)}{_cell(r['drain_s'], '.2f', 9)}"
            f"{_cell(r['from_first_events_per_s'], ',', 11)}"
            f"{_cell(r['from_first_ratio'], '.2f', 7)}"
            f"{_cell(r['settled_after_launch_s'], '.2f', 10)}{_cell(r['rebalance_s'], '.2f', 10)}"
            f"{r['redelivered']:>10,}{r['tag_records']:>9,}"
        )
    return lines


def _ratios(runs: list[dict[str, Any]]) -> None:
    """Add each run's throughput over the one-worker run's (None without one)."""
    base = next((r for r in runs if r["workers"] == 1), None)
    for r in runs:
        for key, ratio in (
            ("events_per_s", "ratio"),
            ("from_first_events_per_s", "from_first_ratio"),
        ):
            known = base is not None and base[key] and r[key]
            r[ratio] = round(r[key] / base[key], 3) if base is not None and known else None


NOTES = [
    "clock: from the first poll at which every worker's /health lists partitions, together "
    "all of them, none rebalancing, and the summed counter has moved (events before it are not "
    "timed), to the first poll at which the workers' summed streamtags_events_consumed_total "
    "(+ dead letters) reaches the backlog size; polled every 0.2 s",
    "from_first_*: the same, but from the first poll at which the summed counter moved "
    "(the rebalance included)",
    "rebalance_s: from the first event consumed to the settled group; "
    "settled_after_launch_s: from starting the workers to the settled group",
    "CPU: user+system time of the worker processes (all threads), summed, over the window",
    "redelivered: events consumed beyond the backlog size (re-read after a partition moved)",
    "committed_to_end_after_s: seconds after the clock stopped until the group's committed "
    "offsets reached every input partition's end (null: not within 60 s)",
    "mode 'gated': each worker count had its own empty topics; the backlog was produced "
    "after its group settled, with the workers frozen (SIGSTOP/SIGCONT) meanwhile",
    "every worker: python -m streamtags worker, the whole rules/ catalogue, RocksDB, "
    "its own data dir and web port; one new app id (consumer group) per worker count",
]


def report(runs: list[Drain], facts: dict[str, Any], out: Path) -> None:
    """Print the table and write the JSON with the machine, versions and backlog."""
    figures = [run.figures() for run in runs]
    _ratios(figures)
    print()
    print("\n".join(table(figures)))
    print(
        "\nevents/s: clock from the settled group (all partitions owned) to the last event;"
        "\n| from 1st: clock from the first event consumed (rebalance included);"
        "\nratio: over 1 worker; rebal. s: first event to settled group; redeliv.: events"
        " consumed twice"
    )
    for r in figures:
        if r["events_per_s"] is None:
            print(f"{r['workers']} worker(s): the backlog was drained before the group settled")
    facts["runs"] = figures
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(facts, indent=2) + "\n")
    print(f"\nwrote {out}")


def _worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if any(not 1 <= count <= PARTITIONS for count in counts):
        raise argparse.ArgumentTypeError(f"worker counts go from 1 to {PARTITIONS} (partitions)")
    return counts


def run_counts(
    contestant: Contestant, counts: list[int], *, users: int, span_min: float, gated: bool
) -> tuple[list[Drain], dict[str, Any]]:
    """Each worker count in turn over the backlog; the runs and the backlog's facts.

    Not ``gated``: the backlog is produced once, on ``contestant``'s topics, and
    every group reads it from the start. ``gated``: each count gets its own
    topics, empty until its group has settled (see :func:`drain`), then the same
    backlog is produced on them.
    """
    rules, runs = ROOT / "rules", []
    backlog: dict[str, Any] = {}
    if not gated:
        backlog = produce_backlog(contestant, users, span_min)
    for workers in counts:
        print(f"{workers} worker(s) ...", flush=True)
        if not gated:
            runs.append(drain(contestant, workers, rules))
            continue
        own = replace(contestant, topics={s: f"{contestant.run}.{workers}w.{s}" for s in STREAMS})
        asyncio.run(ensure_topics(own.topics.values(), bootstrap=KAFKA, partitions=PARTITIONS))

        def produce(own: Contestant = own) -> None:
            backlog.update(produce_backlog(own, users, span_min))

        runs.append(drain(own, workers, rules, produce=produce))
    return runs, backlog


def main() -> None:
    """Produce the backlog, let each worker count drain it in its own group, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=_worker_counts, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--span-min", type=float, default=120.0, help="event-time span, minutes")
    parser.add_argument("--gated", action="store_true", help="settle each group before producing")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per worker count")
    parser.add_argument("--keep", action="store_true", help="keep topics, Redis keys, temp dir")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args()

    run = f"scl{uuid.uuid4().hex[:8]}"
    workdir = ROOT / ".stack" / "bench" / run
    workdir.mkdir(parents=True)
    topics = {stream: f"{run}.{stream}" for stream in STREAMS}
    contestant = Contestant(run, workdir, topics, args.events, args.timeout_s)
    facts: dict[str, Any] = {"run": run, "machine": machine(), "versions": versions()}
    facts |= {"mode": "gated" if args.gated else "backlog first", "notes": NOTES}
    finished = False
    try:
        runs, facts["backlog"] = run_counts(
            contestant, args.workers, users=args.users, span_min=args.span_min, gated=args.gated
        )
        facts["rules"] = len(list((ROOT / "rules").glob("*.yaml")))
        report(runs, facts, Path(args.out))
        finished = True
    finally:
        clean_up(run, workdir, keep=args.keep, finished=finished)


if __name__ == "__main__":
    main()
