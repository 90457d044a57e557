"""streamtags side by side with Quix Streams and the raw aiokafka ceiling, on one backlog.

One run produces a backlog once (``bench/backlog.py``; default 200,000 JSON
events over 50,000 users on 4 topics x 8 partitions, keyed by ``user_id``),
then lets each contestant drain all of it, one after the other, each in its
own process with its own consumer group:

- ``aiokafka raw``: ``getmany`` + ``orjson.loads`` (``bench/raw_ceiling.py``);
- ``quix 3 rules``: Quix Streams, ``ip_hopping``, ``frustrated`` and
  ``cart_abandoned`` with RocksDB state and changelogs (``bench/quix_rules.py``),
  Quix's defaults but a 1 s commit interval like streamtags; the ratio column
  is relative to it;
- ``quix 3 rules, poll 50 ms``: the same with ``consumer_poll_timeout=0.05``.
  With concatenated topics Quix refills its time-alignment buffers with a
  consume call that waits up to the poll timeout (default 1 s) for a full
  batch, which can leave its CPU idle; this run shows what the default costs;
- ``streamtags 3 rules``: ``python -m streamtags worker`` with copies of the
  same three rules, RocksDB store;
- ``streamtags 15 rules``: the same worker with the whole ``rules/`` catalogue.

Timing is the same for all: the clock starts once a contestant has
processed its first batch (those events are not counted: this leaves out
start-up, group join and state recovery) and stops when it has processed
the last event. Quix and the raw consumer time themselves in-process; the
streamtags worker is timed from outside by polling its ``/metrics``
(``streamtags_events_consumed_total``) every 0.2 s, so its end is seen up to
0.2 s late. CPU per event is the contestant process's user+system CPU time
(all threads) over the same window, divided by the events timed.

A second table counts each contestant's tag records by tag and action next
to streamtags' offline replay of the same events (the reference), so a
contestant that is fast because it does less shows it.

Prints both tables and writes bench/results/compare.json (machine, versions,
notes). Needs the stack and Quix Streams, which only the bench venv has:
``make bench-compare``, or

    .venv-bench/bin/python bench/compare.py [--events 200000] [--users 50000] [--only quix,raw]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from importlib import metadata, util
from pathlib import Path
from typing import Any

import redis
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backlog import SIGNAL_SHARE, backlog, produce, reference_tags  # noqa: E402
from streamtags.live.topics import ensure_topics  # noqa: E402
from streamtags.settings import Settings  # noqa: E402

__all__ = [
    "Contestant",
    "Result",
    "delete_redis_keys",
    "delete_topics",
    "events_seen",
    "free_port",
    "machine",
    "main",
    "process_cpu_s",
    "produce_backlog",
    "report",
    "run_contestants",
    "start_worker",
    "stop_worker",
    "versions",
]

KAFKA = os.environ.get("STREAMTAGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("STREAMTAGS_REDIS_URL", "redis://127.0.0.1:6379/0")
STREAMS = ("orders", "browse", "logins", "accounts")
HEADLINE_RULES = ("ip_hopping", "frustrated", "cart_abandoned")
PARTITIONS = 8
#: how often the streamtags worker's /metrics is read while it drains, seconds
POLL_S = 0.2


@dataclass(slots=True)
class Result:
    """One contestant's drain: events timed, wall seconds, CPU seconds, tag records emitted."""

    name: str
    events_timed: int
    drain_s: float
    cpu_s: float
    tags: dict[str, float] = field(default_factory=dict)
    #: ``topic/reason`` -> input messages dead-lettered (streamtags only)
    rejected: dict[str, float] = field(default_factory=dict)
    loadavg_before: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Events processed per wall second."""
        return self.events_timed / self.drain_s

    @property
    def cpu_us_per_event(self) -> float:
        """User+system CPU microseconds per event."""
        return self.cpu_s / self.events_timed * 1e6


@dataclass(frozen=True, slots=True)
class Contestant:
    """Where one run lives: its unique names, its temporary directory and its backlog."""

    run: str
    workdir: Path
    topics: dict[str, str]
    events: int
    timeout_s: float

    def child(self, name: str, script: str, *options: str) -> Result:
        """Run a self-timing contestant script; it writes its :class:`Result` fields as JSON."""
        result_path = self.workdir / f"{_slug(name)}.json"
        log_path = self.workdir / f"{_slug(name)}.log"
        command = [sys.executable, str(ROOT / "bench" / script), "--bootstrap", KAFKA]
        command += ["--topics", ",".join(self.topics.values()), "--events", str(self.events)]
        command += ["--result", str(result_path), *options]
        loadavg = os.getloadavg()[0]
        with log_path.open("wb") as log:
            try:
                subprocess.run(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=self.timeout_s,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                raise SystemExit(f"{name} failed ({error}); see {log_path}") from None
        fields = json.loads(result_path.read_text())
        return Result(name=name, loadavg_before=loadavg, **fields)

    def quix(self, name: str, *, poll_timeout_s: float) -> Result:
        """Run ``bench/quix_rules.py`` with its own consumer group, state and output topic."""
        tag = _slug(name)
        return self.child(
            name,
            "quix_rules.py",
            *("--streams", ",".join(self.topics), "--group", f"{self.run}-{tag}"),
            *("--output", f"{self.run}.{tag}.tags", "--poll-timeout-s", str(poll_timeout_s)),
            *("--state-dir", str(self.workdir / f"{tag}-state")),
        )

    def streamtags(self, name: str, rules_dir: Path) -> Result:
        """Run ``python -m streamtags worker`` on the backlog and time it through ``/metrics``."""
        tag = _slug(name)
        port = free_port()
        env = self.worker_env(tag, rules_dir, port=port, data_dir=self.workdir / f"{tag}-data")
        log_path = self.workdir / f"{tag}.log"
        loadavg = os.getloadavg()[0]
        worker = start_worker(env, log_path)
        try:
            result = self._watch(name, worker, port, log_path)
        finally:
            stop_worker(worker)
        result.loadavg_before = loadavg
        return result

    def worker_env(self, tag: str, rules_dir: Path, *, port: int, data_dir: Path) -> dict[str, str]:
        """A worker's environment: app id (= consumer group), outputs and Redis prefixes
        named after ``tag``, so workers given the same ``tag`` share one group."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTAGS_")}
        env |= {
            "STREAMTAGS_KAFKA_BOOTSTRAP": KAFKA,
            "STREAMTAGS_REDIS_URL": REDIS_URL,
            "STREAMTAGS_APP_ID": f"{self.run}-{tag}",
            "STREAMTAGS_STORE": "rocksdb://",
            "STREAMTAGS_DATA_DIR": str(data_dir),
            "STREAMTAGS_RULES_DIR": str(rules_dir),
            "STREAMTAGS_PARTITIONS": str(PARTITIONS),
            "STREAMTAGS_WEB_PORT": str(port),
            "STREAMTAGS_REDIS_KEY_PREFIX": f"{self.run}:{tag}:user:",
            "STREAMTAGS_REDIS_TRIGGER_PREFIX": f"{self.run}:{tag}:trigger:",
            "STREAMTAGS_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "warning"),
            # a worker setting under test (README "Benchmarks"), e.g. STANDBY_REPLICAS=0
            **worker_overrides(os.environ.get("BENCH_WORKER_SETTINGS", "")),
            **{f"STREAMTAGS_TOPIC_{s.upper()}": t for s, t in self.topics.items()},
        }
        for output in ("tags", "risk_tags", "coupon_triggers", "dead_letter"):
            env[f"STREAMTAGS_TOPIC_{output.upper()}"] = f"{self.run}.{tag}.{output}"
        return env

    def _watch(self, name: str, worker: subprocess.Popen[bytes], port: int, log: Path) -> Result:
        start: tuple[float, float, float] | None = None
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SystemExit(f"{name}: the worker exited; see {log}")
            consumed = events_seen(port)
            if consumed and start is None:
                start = (time.perf_counter(), process_cpu_s(worker.pid), consumed)
            if consumed >= self.events:
                assert start is not None
                drain_s = time.perf_counter() - start[0]
                cpu_s = process_cpu_s(worker.pid) - start[1]
                # Events wait in the reorder buffer until the watermark passes them: let
                # the last ones out (untimed) before counting the tags.
                time.sleep(Settings().lateness_ms / 1000 + 2)
                return Result(
                    name=name,
                    events_timed=int(consumed - start[2]),
                    drain_s=drain_s,
                    cpu_s=cpu_s,
                    tags=labelled(port, "streamtags_tag_changes_total", "tag", "action"),
                    rejected=labelled(port, "streamtags_events_rejected_total", "topic", "kind"),
                )
            time.sleep(POLL_S)
        raise SystemExit(f"{name}: not drained within {self.timeout_s:.0f} s; see {log}")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m streamtags worker`` with ``env``, its output going to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streamtags", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Ask the worker to stop (SIGTERM); kill it if it has not within 60 s."""
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def worker_overrides(spec: str) -> dict[str, str]:
    """``NAME=value,NAME=value`` -> ``{"STREAMTAGS_NAME": "value"}``."""
    pairs = (item.split("=", 1) for item in spec.split(",") if "=" in item)
    return {f"STREAMTAGS_{name.strip().upper()}": value.strip() for name, value in pairs}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_cpu_s(pid: int) -> float:
    """User+system CPU seconds of process ``pid``, all threads (from ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the command name: utime and stime are fields 14 and 15 of stat(5)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric_sum(port: int, name: str) -> float:
    """The sum of a worker's metric ``name`` over its labels (its ``/metrics`` page)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


#: dead-letter kinds of events the engine refused after the intake counted them consumed
ENGINE_REJECTIONS = ("too_late", "engine_error")


def events_seen(port: int) -> float:
    """Events the worker has consumed or dead-lettered, each once; 0 while its web server is
    not up. (``future_timestamp`` may come from either side; the backlogs here have none.)"""
    try:
        rejected = labelled(port, "streamtags_events_rejected_total", "topic", "kind")
        consumed = metric_sum(port, "streamtags_events_consumed_total")
    except OSError:
        return 0.0
    refused = (n for key, n in rejected.items() if key.rpartition("/")[2] not in ENGINE_REJECTIONS)
    return consumed + sum(refused)


def labelled(port: int, metric: str, *labels: str) -> dict[str, float]:
    """``label/label`` -> value, for each sample of a counter on the worker's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            inside = line[line.index("{") + 1 : line.index("}")]
            found = {k: v.strip('"') for k, v in (part.split("=", 1) for part in inside.split(","))}
            counts["/".join(found[label] for label in labels)] = float(line.rpartition(" ")[2])
    return dict(sorted(counts.items()))


def machine() -> dict[str, Any]:
    """The CPU the numbers were taken on."""
    models = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return {"nproc": os.cpu_count(), "cpu_model": models[0] if models else platform.processor()}


def versions() -> dict[str, str]:
    """Python, the client libraries and the broker (from the running broker's classpath)."""
    found = {"python": platform.python_version()}
    for package in ("faust-streaming", "aiokafka", "quixstreams", "confluent-kafka", "rocksdict"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["kafka"] = "unknown"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in args:
            jars = next((a.decode() for a in args if b"/libs-" in a), "")
            found["kafka"] = jars.partition("/libs-")[2].partition("/")[0] or "unknown"
    return found


async def delete_topics(run: str) -> list[str]:
    """Delete every topic whose name holds ``run`` (inputs, outputs, changelogs)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=30_000)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if run in name]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


def clean_up(run: str, workdir: Path, *, keep: bool, finished: bool) -> None:
    """Delete a run's topics and Redis keys (unless ``keep``), and its working directory
    when it finished; a run that did not finish keeps its logs and says where."""
    if not keep:
        asyncio.run(delete_topics(run))
        delete_redis_keys(run)
    if finished and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not finished:
        print(f"logs kept in {workdir}", file=sys.stderr)


def delete_redis_keys(run: str) -> int:
    """Delete the Redis keys the workers wrote under the ``run`` prefixes."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{run}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def _quix(results: list[Result]) -> Result | None:
    """The Quix run the others are compared with: the default one when it ran."""
    runs = [r for r in results if r.name.startswith("quix")]
    return next((r for r in runs if r.name == "quix 3 rules"), runs[0] if runs else None)


def table(results: list[Result]) -> list[str]:
    """The printed comparison, one line per contestant."""
    quix = _quix(results)
    lines = [
        f"{'contestant':<28}{'events/s':>10}{'x Quix':>8}{'CPU us/ev':>11}"
        f"{'cores':>7}{'drain s':>9}{'tag records':>13}"
    ]
    for r in results:
        ratio = f"{r.events_per_s / quix.events_per_s:.2f}" if quix else "-"
        lines.append(
            f"{r.name:<28}{r.events_per_s:>10,.0f}{ratio:>8}{r.cpu_us_per_event:>11.1f}"
            f"{r.cpu_s / r.drain_s:>7.2f}{r.drain_s:>9.2f}{sum(r.tags.values()):>13,.0f}"
        )
    return lines


def tag_table(results: list[Result], reference: dict[str, float]) -> list[str]:
    """Tag records by ``tag/action``: the offline replay's, then each rule-running contestant's."""
    taggers = [r for r in results if r.tags or not r.name.startswith("aiokafka")]
    keys = sorted(set(reference).union(*(r.tags for r in taggers)))
    heads = ["reference", *(f"#{i + 1}" for i in range(len(taggers)))]
    lines = [f"{'tag records':<26}" + "".join(f"{head:>11}" for head in heads)]
    for key in keys:
        counts = [reference.get(key, 0.0), *(r.tags.get(key, 0.0) for r in taggers)]
        lines.append(f"{key:<26}" + "".join(f"{count:>11,.0f}" for count in counts))
    lines += [f"  #{i + 1} = {r.name}" for i, r in enumerate(taggers)]
    lines.append("  reference = streamtags' offline replay of the same events (3 rules)")
    return lines


def report(results: list[Result], facts: dict[str, Any], out: Path) -> None:
    """Print the table and write the JSON with the machine, versions and backlog."""
    quix = _quix(results)
    print()
    print("\n".join(table(results)))
    print()
    print("\n".join(tag_table(results, facts.get("reference_tags", {}))))
    facts["contestants"] = [
        {
            "name": r.name,
            "events_timed": r.events_timed,
            "drain_s": round(r.drain_s, 3),
            "events_per_s": round(r.events_per_s),
            "ratio_to_quix": round(r.events_per_s / quix.events_per_s, 3) if quix else None,
            "cpu_s": round(r.cpu_s, 3),
            "cpu_us_per_event": round(r.cpu_us_per_event, 2),
            "cores_busy": round(r.cpu_s / r.drain_s, 3),
            "loadavg_1m_before": r.loadavg_before,
            "tag_records": r.tags,
            "dead_lettered": r.rejected,
        }
        for r in results
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(facts, indent=2) + "\n")
    print(f"\nwrote {out}")


CONTESTANTS = ("raw", "quix", "quix-poll", "streamtags3", "streamtags15")
#: the second Quix run's ``consumer_poll_timeout``, seconds (Quix's default is 1 s)
QUIX_SHORT_POLL_S = 0.05


def run_contestants(contestant: Contestant, chosen: list[str]) -> list[Result]:
    """Each chosen contestant in turn, over the same backlog, with its own consumer group."""
    catalogue = len(list((ROOT / "rules").glob("*.yaml")))
    names = {
        "raw": "aiokafka raw",
        "quix": "quix 3 rules",
        "quix-poll": f"quix 3 rules, poll {QUIX_SHORT_POLL_S * 1000:.0f} ms",
        "streamtags3": "streamtags 3 rules",
        "streamtags15": f"streamtags {catalogue} rules",
    }
    results = []
    for key in (key for key in CONTESTANTS if key in chosen):
        print(f"{names[key]} ...", flush=True)
        if key == "raw":
            results.append(contestant.child(names[key], "raw_ceiling.py"))
        elif key.startswith("quix"):
            poll_s = QUIX_SHORT_POLL_S if key == "quix-poll" else 1.0
            results.append(contestant.quix(names[key], poll_timeout_s=poll_s))
        elif key == "streamtags3":
            results.append(contestant.streamtags(names[key], headline_rules(contestant.workdir)))
        else:
            results.append(contestant.streamtags(names[key], ROOT / "rules"))
    return results


def headline_rules(workdir: Path) -> Path:
    """A rules directory with copies of the three headline rules."""
    three = workdir / "rules-3"
    three.mkdir(exist_ok=True)
    for rule in HEADLINE_RULES:
        shutil.copy(ROOT / "rules" / f"{rule}.yaml", three)
    return three


def produce_backlog(contestant: Contestant, users: int, span_min: float) -> dict[str, Any]:
    """Create the input topics and produce the backlog; facts about it.

    ``span_min``: the events' times rise evenly over this many minutes, ending now.
    """
    topics = contestant.topics
    asyncio.run(ensure_topics(topics.values(), bootstrap=KAFKA, partitions=PARTITIONS))
    print(f"{contestant.run}: producing {contestant.events:,} events ...", flush=True)
    started = time.perf_counter()
    span_ms, end_ms = int(span_min * 60_000), int(time.time() * 1000)
    asyncio.run(
        produce(
            topics,
            backlog(contestant.events, users, span_ms=span_ms, end_ms=end_ms),
            bootstrap=KAFKA,
        )
    )
    return {
        "events": contestant.events,
        "users": users,
        "topics": len(topics),
        "partitions": PARTITIONS,
        "event_time_span_min": span_min,
        "end_ms": end_ms,
        "signal_share": SIGNAL_SHARE,
        "produce_s": round(time.perf_counter() - started, 2),
    }


def make_backlog(contestant: Contestant, users: int, span_min: float) -> dict[str, Any]:
    """Produce the backlog and replay it offline; facts about it and the reference tags."""
    facts = produce_backlog(contestant, users, span_min)
    print("replaying it offline through the streamtags engine (reference tags) ...", flush=True)
    span_ms, end_ms = int(span_min * 60_000), facts.pop("end_ms")
    again = backlog(contestant.events, users, span_ms=span_ms, end_ms=end_ms)
    return {
        "backlog": facts,
        "reference_tags": reference_tags(again, headline_rules(contestant.workdir)),
    }


NOTES = [
    "timing: from the first processed batch (not counted) to the last event processed; CPU is "
    "the contestant process's user+system time (all threads) over the same window",
    "streamtags is timed by polling /metrics every 0.2 s, so its end may be seen up to 0.2 s late",
    "quix: Quix defaults except commit_interval=1 s (a streamtags worker's default; Quix's is "
    "5 s); the 'poll 50 ms' run also sets consumer_poll_timeout=0.05 s (default 1 s)",
    "quix has no timers: cart_abandoned is judged on the user's later events; tags are not "
    "cleared by TTL; no Redis, coupon triggers, dead letters or duplicate suppression",
    "streamtags also writes tags to Redis and coupon triggers to Kafka",
    "reference_tags: streamtags' offline replay (one partition, event-time order) of the same "
    "events with the 3 rules",
]


def main() -> None:
    """Produce the backlog once, let every chosen contestant drain it, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--span-min", type=float, default=120.0, help="event-time span, minutes")
    parser.add_argument("--only", default=",".join(CONTESTANTS), help="comma-separated subset")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per contestant")
    parser.add_argument("--keep", action="store_true", help="keep topics, Redis keys, temp dir")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "compare.json"))
    args = parser.parse_args()
    chosen = args.only.split(",")
    if unknown := set(chosen) - set(CONTESTANTS):
        parser.error(f"unknown contestants {sorted(unknown)}; choose from {CONTESTANTS}")
    if any(key.startswith("quix") for key in chosen) and util.find_spec("quixstreams") is None:
        raise SystemExit("quixstreams is not installed here: run `make bench-compare`")

    run = f"cmp{uuid.uuid4().hex[:8]}"
    workdir = ROOT / ".stack" / "bench" / run
    workdir.mkdir(parents=True)
    topics = {stream: f"{run}.{stream}" for stream in STREAMS}
    contestant = Contestant(run, workdir, topics, args.events, args.timeout_s)
    facts: dict[str, Any] = {"run": run, "machine": machine(), "versions": versions()}
    finished = False
    try:
        facts |= make_backlog(contestant, args.users, args.span_min)
        facts["notes"] = NOTES
        report(run_contestants(contestant, chosen), facts, Path(args.out))
        finished = True
    finally:
        clean_up(run, workdir, keep=args.keep, finished=finished)


if __name__ == "__main__":
    main()
