"""Run projections in a process of their own: `python -m esmongo.projections.worker`.

    python -m esmongo.projections.worker --uri mongodb://... --db esmongo \\
        --projections esmongo.bank.read_models:bank_projections

`--projections` names a callable returning the projections (or a list of them). SIGTERM
and SIGINT stop it cleanly: the batch in flight is finished or abandoned, the leases are
released. `--kill-probability` makes the process SIGKILL itself at random points between
the steps of a batch (crash tests only).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.errors import ConfigurationError
from esmongo.projections.daemon import ProjectionDaemon
from esmongo.projections.inline import configure_inline
from esmongo.projections.options import CATCH_UP_BYTES, RunnerOptions, StepHook
from esmongo.projections.projection import Projection
from esmongo.store import EventStore


def load_projections(spec: str) -> list[Projection]:
    """`package.module:name`, where name is a list of projections or a callable making one."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--projections must look like package.module:name, not {spec!r}")
    found: Any = getattr(importlib.import_module(module_name), attr)
    if callable(found):
        found = found()
    projections = list(found)
    for projection in projections:
        if not isinstance(projection, Projection):
            raise TypeError(f"{spec} gave {projection!r}, which is not a Projection")
    return projections


def chaos(probability: float) -> StepHook:
    """A step hook that kills this process, without any cleanup, now and then."""

    def maybe_die(point: str) -> None:
        if random.random() < probability:
            print(f"chaos: SIGKILL at {point}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return maybe_die


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m esmongo.projections.worker")
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"), required=False)
    parser.add_argument("--db", default=os.environ.get("ESMONGO_DB", "esmongo"))
    parser.add_argument("--projections", required=True)
    parser.add_argument("--only", action="append", help="run only these projection names")
    parser.add_argument(
        "--inline",
        help="projections to hand over to the appends once caught up, comma-separated "
        "(default: $ESMONGO_INLINE_PROJECTIONS; docs/projections.md)",
    )
    parser.add_argument("--owner")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--catch-up-batch-size", type=int)
    parser.add_argument("--catch-up-max-bytes", type=int, default=CATCH_UP_BYTES)
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--idle-poll", type=float, default=1.0)
    parser.add_argument("--standby-poll", type=float)
    parser.add_argument("--kill-probability", type=float, default=0.0)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.uri:
        parser.error("--uri (or MONGODB_URI) is required")
    return args


async def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    projections = load_projections(args.projections)
    try:
        configure_inline(projections, args.inline)
    except ConfigurationError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.only:
        projections = [p for p in projections if p.name in set(args.only)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client: AsyncMongoClient[Document] = AsyncMongoClient(args.uri)
    try:
        store = await EventStore.open(client.get_database(args.db, codec_options=CODEC_OPTIONS))
        options = RunnerOptions(
            owner=args.owner,
            batch_size=args.batch_size,
            catch_up_batch_size=args.catch_up_batch_size,
            catch_up_max_bytes=args.catch_up_max_bytes,
            lease_ttl_s=args.lease_ttl,
            idle_poll_s=args.idle_poll,
            standby_poll_s=args.standby_poll,
            step_hook=chaos(args.kill_probability) if args.kill_probability > 0 else None,
        )
        daemon = ProjectionDaemon(store, projections, options)
        print(f"worker {daemon.owner} running {[p.name for p in projections]}", flush=True)
        await daemon.run(stop)
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
