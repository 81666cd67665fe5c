"""Costs as the log grows: fill to 10k, 100k and 1M events over 100,000 streams, measure at each.

    python benchmarks/bench_scale.py [--home DIR] [--stops 10000 100000 1000000]

Not a test: filling 1,000,000 events takes a long while on the embedded server. The fill is
resumable: the server's files live under `--home` (default ~/.esmongo-bench-scale; or
MONGODB_URI), each filled event has a stable id, so a fill stopped anywhere goes on from
where it got to (a batch written but not noted is recorded once: the store answers a
retried event id with its first recording). Measurements of a stop already passed are kept
in the database, with the method that produced them (METHOD), and printed again; rows of
another method are not shown. `--again` measures the stop the home is at once more (the
earlier row is kept aside under another id): the machine may have been busy the first
time. A stop below what the home already holds cannot be measured there (the log cannot
shrink): it is skipped with a note; measure it on a fresh home.

Like for like: the question is whether a cost grows with the size of the LOG, so the reads
are measured on the same streams at every stop. PROBE_STREAMS probe streams of PROBE_EVENTS
events each (type `scale`, ids `q0`..`q99`) are written once, before the fill, round-robin
(version v of every probe stream, then v + 1), so the same 1,000 documents are read at
every stop and only the log around them grows. Written at the start rather than spread over
the log: a spread needs the log to exist first, and spreading them over the fill would give
them another length at each stop. A home filled before probes existed gets them when this
first runs on it, after its fill (the table says at how many filled events).

Event k (from 0) of the fill goes to stream `s{k % 100000}` at version `k // 100000 + 1`:
at 100,000 stored every stream has 1 event, at 1M 10. At each stop:
- append: 300 sequential exact-version appends of 1 event to 100 streams of their own;
- read_stream and aggregate load (`Repository.load`, no cache, no snapshot) of the probe
  streams: 300 each, a random probe stream each time (p50/p99): the like-for-like rows;
- the same on random filled streams, for information only: they hold 1 event up to 100k
  and 10 at 1M, so those rows measure a longer stream, not a longer log;
- read_all page: 100 pages of 1,000 events from random positions;
- catch-up: a projection counting events per stream, from its checkpoint at the head
  minus 10,000 (one document per stream: inserts and merged updates);
- service: `esmongo serve` (with its projection daemon) started on the log: time to answer
  /healthz, then /readyz (a ping to the database) every 50 ms while the startup check of
  stored event versions runs (how long, and whether requests wait on it); resident memory
  after 200 HTTP commands.
Issue 14's targets: at 1M, append >= 0.8x its 10k rate, read_stream p99 and aggregate load
within 1.5x of their 10k figures, service RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).parent))

from common import console, percentile, print_table, stop_process
from esmongo import NO_STREAM, Aggregate, AppendRequest, EventStore, NewEvent, Repository, applies
from esmongo.api import ApiKeys, Role
from esmongo.bank import Bank
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect.embedded import EmbeddedServer, free_port
from esmongo.events import RecordedEvent
from esmongo.model import EventLike
from esmongo.projections import (
    Checkpoints,
    Projection,
    ProjectionRunner,
    RunnerOptions,
    Update,
    handles,
)

STREAMS = 100_000
PROBE_STREAMS = 100
PROBE_EVENTS = 10
DB = "bench_scale"
META = "bench_scale_meta"
METHOD = "probe-streams-1"
"""Names what the stored measurements of a stop were made with; stored with them."""
CHECK_LOG = "schema check:"
"""How the service logs the end of its startup check (esmongo.api.app)."""


class Probe(Aggregate):
    aggregate_type = "scale"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    @applies("scale.filled")
    def _filled(self, event: EventLike) -> None:
        self.total += int(event.data["n"])


class PerStream(Projection):
    """Events per stream: one upserted document per stream."""

    name = "scale_per_stream"
    collections = {"scale_per_stream": []}

    @handles("scale.filled")
    def filled(self, event: RecordedEvent) -> Update:
        return Update("scale_per_stream", {"_id": event.aggregate_id}, inc={"events": 1})


@contextlib.contextmanager
def server(home: Path) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    home.mkdir(parents=True, exist_ok=True)
    with EmbeddedServer(home) as embedded:
        yield embedded.uri


@contextlib.asynccontextmanager
async def database(uri: str) -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        yield client.get_database(DB, codec_options=CODEC_OPTIONS)
    finally:
        await client.close()


async def filled(db: AsyncDatabase[Document]) -> int:
    doc = await db[META].find_one({"_id": "fill"})
    return int(doc["filled"]) if doc else 0


async def write_probes(store: EventStore, db: AsyncDatabase[Document]) -> int:
    """The probe streams, written once (resumable, one round of versions at a time);
    returns how many filled events the log held when they were written."""
    meta = db[META]
    doc = await meta.find_one({"_id": "probes"}) or {}
    if doc.get("rounds", 0) == PROBE_EVENTS:
        return int(doc["atFilled"])
    at = int(doc["atFilled"]) if "atFilled" in doc else await filled(db)
    for v in range(int(doc.get("rounds", 0)) + 1, PROBE_EVENTS + 1):
        requests = [
            AppendRequest(
                "scale",
                f"q{i}",
                [NewEvent("scale.filled", {"n": 1, "q": i}, event_id=f"probe-{i}-{v}")],
                v - 1 or NO_STREAM,
            )
            for i in range(PROBE_STREAMS)
        ]
        await store.append_streams(requests)
        await meta.update_one(
            {"_id": "probes"}, {"$set": {"rounds": v, "atFilled": at}}, upsert=True
        )
    return at


async def fill(store: EventStore, db: AsyncDatabase[Document], upto: int) -> None:
    meta = db[META]
    done = await filled(db)
    started, first = time.perf_counter(), done
    while done < upto:
        batch = range(done, min(upto, done + 500))
        requests = [
            AppendRequest(
                "scale",
                f"s{k % STREAMS}",
                [NewEvent("scale.filled", {"n": 1, "k": k}, event_id=f"fill-{k}")],
                k // STREAMS or NO_STREAM,
            )
            for k in batch
        ]
        await store.append_streams(requests)
        done = batch[-1] + 1
        await meta.update_one({"_id": "fill"}, {"$set": {"filled": done}}, upsert=True)
        if done % 20_000 == 0:
            rate = (done - first) / (time.perf_counter() - started)
            console.print(f"filled {done:,} ({rate:,.0f} events/s)")


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "max_ms": max(samples, default=0.0) * 1000,
        "per_s": len(samples) / sum(samples) if samples else 0.0,
        "n": len(samples),
    }


async def timed(samples: list[float], work: Any) -> None:
    started = time.perf_counter()
    await work
    samples.append(time.perf_counter() - started)


async def drain(events: AsyncIterator[RecordedEvent]) -> int:
    n = 0
    async for _ in events:
        n += 1
    return n


async def reads_and_loads(
    store: EventStore, ids: list[str], events: int, rng: random.Random
) -> dict[str, Any]:
    """300 read_streams, then 300 loads, each of a random stream of `ids` (which hold
    `events` events each, on average)."""
    reads: list[float] = []
    for _ in range(300):
        await timed(reads, drain(store.read_stream("scale", rng.choice(ids))))
    repo = Repository(store, Probe)
    loads: list[float] = []
    for _ in range(300):
        await timed(loads, repo.load(rng.choice(ids)))
    return {"read_stream": stats(reads), "load": stats(loads), "events": events}


async def measure(store: EventStore, db: AsyncDatabase[Document], stop: int) -> dict[str, Any]:
    rng = random.Random(stop)
    appends: list[float] = []
    tag = f"p{stop}-{time.time_ns()}"  # a measurement may be run again after a failure
    for i in range(100):
        await store.append("probe", f"{tag}-{i}", [NewEvent("probe.x", {})], NO_STREAM)
    for r in range(1, 4):
        for i in range(100):
            await timed(appends, store.append("probe", f"{tag}-{i}", [NewEvent("probe.x", {})], r))
    probes = [f"q{i}" for i in range(PROBE_STREAMS)]
    probe = await reads_and_loads(store, probes, PROBE_EVENTS, rng)
    assert await drain(store.read_stream("scale", "q0")) == PROBE_EVENTS
    streams = min(stop, STREAMS)
    randoms = [f"s{rng.randrange(streams)}" for _ in range(1000)]
    random_streams = await reads_and_loads(store, randoms, -(-stop // streams), rng)
    pages: list[float] = []
    head = await store.head_sequence()
    for _ in range(100):
        after = rng.randrange(max(1, head - 1000))
        await timed(pages, drain(store.read_all(after_sequence=after, limit=1000)))
    catch_up = await catch_up_rate(store, db)
    return {
        "method": METHOD,
        "stored": head,
        "append": stats(appends),
        "probe": probe,
        "random": random_streams,
        "read_all_page": stats(pages),
        "catch_up_per_s": catch_up,
    }


async def catch_up_rate(store: EventStore, db: AsyncDatabase[Document]) -> float:
    """A projection's catch-up over the last 10,000 events (its checkpoint set just before)."""
    await db.drop_collection("scale_per_stream")
    checkpoints = Checkpoints(db)
    await checkpoints.delete(PerStream.name)
    head = await store.head_sequence()
    start = max(0, head - 10_000)
    runner = ProjectionRunner(store, PerStream(), RunnerOptions(batch_size=1000))
    await runner.init()
    await checkpoints.collection.update_one(
        {"_id": PerStream.name}, {"$set": {"position": start}}, upsert=True
    )
    started = time.perf_counter()
    await runner.catch_up()
    return (head - start) / (time.perf_counter() - started)


def start_service(uri: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`esmongo serve` with its projection daemon, its esmongo log lines (INFO, with their
    time) in `log`: the end of the startup check is one of them."""
    env = os.environ | {"MONGODB_URI": uri, "ESMONGO_DB": DB, "ESMONGO_INLINE_PROJECTIONS": ""}
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, format='%(created)f %(name)s %(message)s')\n"
        "logging.getLogger('esmongo').setLevel(logging.INFO)\n"
        "from esmongo.cli import app\n"
        "sys.argv = ['esmongo', 'serve', '--port', sys.argv[1], '--log-level', 'warning']\n"
        "app()\n"
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def check_ended(log: Path) -> float | None:
    """When the service logged the end of its startup check (epoch seconds), if it has."""
    for line in log.read_text(errors="replace").splitlines():
        if CHECK_LOG in line or "startup check of stored event versions failed" in line:
            return float(line.split()[0])
    return None


async def service(uri: str) -> dict[str, Any]:
    """Startup of `esmongo serve` on this log, then its resident MB after 200 commands."""
    async with database(uri) as db:
        await Bank(db).init()
        keys = ApiKeys(db)
        await keys.init()
        key = await keys.create(Role.TELLER, "scale")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        log = Path(tmp) / "serve.log"
        started_wall, started = time.time(), time.perf_counter()
        process = start_service(uri, port, log)
        try:
            healthz = await until_healthy(base, started)
            pings = await pings_during_check(base, log)
            ended = check_ended(log)
            if ended is None:
                raise RuntimeError(f"the startup check did not end: {log.read_text()}")
            rss = await rss_after_commands(base, key, process.pid)
        finally:
            await stop_process(process)
    return {
        "healthz_s": healthz,
        "check_s": ended - started_wall,
        "pings": stats(pings["samples"]),
        "pings_over_2s": pings["over"],
        "rss_mb": rss,
    }


async def until_healthy(base: str, started: float) -> float:
    """Seconds from the service's start to its first /healthz answer."""
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        while time.perf_counter() - started < 300:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("esmongo serve did not answer /healthz within 300 s")


async def pings_during_check(base: str, log: Path) -> dict[str, Any]:
    """/readyz every 50 ms until the startup check has ended: each pings the database with
    a 2 s bound (503 beyond it), so its time is how long a request waits on the server."""
    samples: list[float] = []
    over = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        deadline = time.perf_counter() + 600
        while check_ended(log) is None and time.perf_counter() < deadline:
            began = time.perf_counter()
            status = (await http.get("/readyz")).status_code
            samples.append(time.perf_counter() - began)
            over += status != 200
            await asyncio.sleep(0.05)
    return {"samples": samples, "over": over}


async def rss_after_commands(base: str, key: str, pid: int) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    tag = f"{time.time_ns()}"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        for c in range(20):
            body = {"accountId": f"rss{tag}-{c}", "currency": "EUR"}
            assert (await http.post("/accounts", json=body)).status_code == 201
            await http.post(f"/accounts/rss{tag}-{c}/activate")
            for _ in range(9):
                r = await http.post(f"/accounts/rss{tag}-{c}/credit", json={"amount": "1"})
                assert r.status_code == 200, r.text
    status = await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return kb / 1024


async def main(home: Path, stops: list[int], again: bool) -> None:
    measured: dict[int, dict[str, Any]] = {}
    with server(home) as uri:
        async with database(uri) as db:
            store = EventStore(db)
            await store.init()
            meta = db[META]
            older = await meta.count_documents({"_id": {"$regex": "^at"}})
            if older:
                console.print(f"[dim]{older} stop(s) measured by an earlier method: not shown[/]")
            probes_at = await write_probes(store, db)
            for stop in stops:
                key = f"{METHOD}@{stop}"
                known = await meta.find_one({"_id": key})
                if known is not None and again and await filled(db) == stop:
                    await meta.insert_one({**known, "_id": f"{key}#{time.time_ns()}"})
                    await meta.delete_one({"_id": key})
                    known = None
                if known is None:
                    held = await filled(db)
                    if held > stop:
                        console.print(
                            f"[yellow]{stop:,}: skipped, this home holds {held:,} filled "
                            "events already (measure it on a fresh --home)[/]"
                        )
                        continue
                    await fill(store, db, stop)
                    figures = await measure(store, db, stop)
                    known = {"_id": key, **figures, "probesAtFilled": probes_at}
                    await meta.insert_one(known)
                if "service" not in known:
                    known["service"] = await service(uri)
                    await meta.update_one({"_id": key}, {"$set": {"service": known["service"]}})
                report(stop, known)
                measured[stop] = known
    if len(measured) > 1:
        summary(measured)


def _ms(f: dict[str, Any]) -> str:
    return f"{f['p50_ms']:.2f} / {f['p99_ms']:.1f} ms"


def report(stop: int, f: dict[str, Any]) -> None:
    p, r, s = f["probe"], f["random"], f["service"]
    rows = [
        ("events stored (head sequence)", f"{f['stored']:,}", ""),
        ("append(1), exact version", f"{f['append']['per_s']:,.0f}/s", _ms(f["append"])),
        (f"read_stream, probe streams ({p['events']} events)", _ms(p["read_stream"]), ""),
        (f"aggregate load, probe streams ({p['events']} events)", _ms(p["load"]), ""),
        (f"read_stream, random filled stream ({r['events']} ev., info)", _ms(r["read_stream"]), ""),
        (f"aggregate load, random filled stream ({r['events']} ev., info)", _ms(r["load"]), ""),
        ("read_all page of 1,000", _ms(f["read_all_page"]), ""),
        ("catch-up (last 10,000 events)", f"{f['catch_up_per_s']:,.0f} events/s", ""),
        ("serve: first /healthz", f"{s['healthz_s']:.1f} s", ""),
        ("serve: startup check of event versions ends", f"{s['check_s']:.1f} s", ""),
        (
            f"serve: /readyz during the check ({s['pings']['n']})",
            _ms(s["pings"]),
            f"max {s['pings']['max_ms']:.0f} ms, {s['pings_over_2s']} over 2 s",
        ),
        ("serve: RSS after 200 commands", f"{s['rss_mb']:.0f} MB", ""),
    ]
    title = f"At {stop:,} filled events (probes written at {f['probesAtFilled']:,}; {METHOD})"
    print_table(title, ["measure", "rate or p50 / p99", ""], rows)


def summary(measured: dict[int, dict[str, Any]]) -> None:
    """Each stop against the first one: the issue's targets."""
    first_stop = min(measured)
    base = measured[first_stop]
    rows = []
    for stop, f in sorted(measured.items()):
        rows.append(
            (
                f"{stop:,}",
                f"{f['append']['per_s'] / base['append']['per_s']:.2f}x",
                _ratio(f, base, "probe", "read_stream"),
                _ratio(f, base, "probe", "load"),
                f"{f['service']['rss_mb']:.0f} MB",
            )
        )
    print_table(
        f"Against {first_stop:,} (targets at 1M: append >= 0.8x, probe read/load <= 1.5x)",
        ["stop", "append rate", "read_stream p50 / p99", "load p50 / p99", "RSS"],
        rows,
    )


def _ratio(f: dict[str, Any], base: dict[str, Any], kind: str, what: str) -> str:
    now, then = f[kind][what], base[kind][what]
    return f"{now['p50_ms'] / then['p50_ms']:.2f}x / {now['p99_ms'] / then['p99_ms']:.2f}x"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=Path.home() / ".esmongo-bench-scale")
    parser.add_argument("--stops", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--again",
        action="store_true",
        help="measure a stop the home holds exactly again (its earlier row is kept aside)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.home, sorted(args.stops), args.again))
