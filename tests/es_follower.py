"""Runs the Orders -> Fulfilment system in a process of its own until it is killed
(es_apps.PAUSE_AT says where the follower stops to be killed)."""

from __future__ import annotations

from eventsourcing.system import SingleThreadedRunner

from es_apps import Fulfilment, Orders, system

if __name__ == "__main__":
    runner: SingleThreadedRunner[object] = SingleThreadedRunner(system())
    runner.start()
    runner.get(Fulfilment).pull_and_process(Orders.name)
    runner.stop()
