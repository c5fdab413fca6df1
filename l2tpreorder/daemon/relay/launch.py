"""`l2tpreorder run` in relay mode: the one service around the `Relay` adapter."""

from __future__ import annotations

import asyncio

from l2tpreorder.config import state_file_path
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.daemon.service import Launch, Service, run_service


def launch(run: Launch) -> int:
    def make() -> Service:
        relay = Relay(run.config, loop=asyncio.get_running_loop())
        return Service(
            run.config,
            relay,
            run.load,
            load_file=run.load_file,
            state_file=state_file_path(run.config),
        )

    return run_service(make)
