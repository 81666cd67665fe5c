"""Where one insert's client time goes: esmongo.eventsourcing against the same counter+insert
transaction written by hand, with PyMongo's sync client and with its async client on the
factory's own loop (through the same hop as esmongo), and an empty hop.

Prints ms per insert for each, in alternating rounds, then per insert on the loop's thread:
event-loop iterations, tasks made and Python calls (cProfile), and with `--top N` the N
functions of most own time of each. Diagnostic, not a benchmark row (cProfile slows what it
watches); docs/eventsourcing.md reads it.

Run: python benchmarks/profile_eventsourcing_insert.py [--inserts 300] [--rounds 3] [--top 0]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).parent))

from bench_eventsourcing import Raw, _doc, _events, recorder
from common import benchmark_server, raw_transaction
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.eventsourcing import MongoFactory

Insert = Callable[[list[StoredEvent]], Any]


def async_raw(factory: MongoFactory, database: str) -> Insert:
    """The raw transaction with the factory's async client, run on its loop."""
    datastore = factory.datastore
    db = datastore.db.client.get_database(database, codec_options=CODEC_OPTIONS)

    async def insert(stored: list[StoredEvent]) -> None:
        def document(seq: int) -> Document:
            return _doc(stored[0], seq)

        await raw_transaction(db, "", document=document, snapshot=True)

    return lambda stored: datastore.run(insert(stored))


def empty_hop(factory: MongoFactory) -> Insert:
    async def nothing() -> None:
        return None

    return lambda _: factory.datastore.run(nothing())


def on_loop(factory: MongoFactory, call: Callable[[], None]) -> None:
    """Run `call` in the loop's thread (a profiler is enabled per thread) and wait."""
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    factory.datastore._loop.loop.call_soon_threadsafe(run)
    done.wait()


def loop_profile(factory: MongoFactory, insert: Insert, n: int) -> pstats.Stats:
    profile = cProfile.Profile()
    on_loop(factory, profile.enable)
    for _ in range(n):
        insert(_events())
    on_loop(factory, profile.disable)
    return pstats.Stats(profile, stream=io.StringIO())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inserts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args()
    database = f"profile_es_{uuid.uuid4().hex[:6]}"
    with benchmark_server() as uri:
        client: MongoClient[Document] = MongoClient(uri)
        raw = Raw(client, database)
        factory, mongo = recorder(
            {"PERSISTENCE_MODULE": "esmongo.eventsourcing", "MONGODB_URI": uri}
            | {"MONGODB_DATABASE": database}
        )
        assert isinstance(factory, MongoFactory)
        cases: list[tuple[str, Insert]] = [
            ("raw, sync client", raw.insert),
            ("raw, async client + hop", async_raw(factory, database)),
            ("esmongo.eventsourcing", mongo.insert_events),
            ("empty hop", empty_hop(factory)),
        ]
        try:
            for _, insert in cases:
                for _ in range(20):
                    insert(_events())
            ms: dict[str, list[float]] = {name: [] for name, _ in cases}
            for _ in range(args.rounds):
                for name, insert in cases:
                    started = time.perf_counter()
                    for _ in range(args.inserts):
                        insert(_events())
                    ms[name].append((time.perf_counter() - started) / args.inserts * 1000)
            for name, times in ms.items():
                print(f"{name:24s} ms per insert: " + "  ".join(f"{t:.3f}" for t in times))
            for name, insert in cases[1:3]:
                stats = loop_profile(factory, insert, args.inserts)
                calls = {key[2]: value[1] for key, value in stats.stats.items()}  # type: ignore[attr-defined]
                total = sum(value[1] for value in stats.stats.values())  # type: ignore[attr-defined]
                n = args.inserts
                print(
                    f"{name}, loop thread, per insert: {calls.get('_run_once', 0) / n:.1f} "
                    f"loop iterations, {calls.get('create_task', 0) / n:.1f} tasks, "
                    f"{total / n:.0f} calls"
                )
                if args.top:
                    out = io.StringIO()
                    stats.stream = out  # type: ignore[attr-defined]
                    stats.sort_stats("tottime").print_stats(args.top)
                    print(out.getvalue())
        finally:
            factory.close()
            client.drop_database(database)
            client.close()


if __name__ == "__main__":
    main()
