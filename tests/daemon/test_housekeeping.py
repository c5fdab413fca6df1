"""The one-second housekeeping tick survives a failing step (in process, a real relay)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import pytest
import uvloop

from l2tpreorder.config import config_from_dict
from l2tpreorder.daemon.relay.adapter import Relay
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.service import Service
from tests.daemon_harness import WAIT, free_udp_port

pytestmark = pytest.mark.integration


def test_a_failing_step_is_logged_and_the_tick_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_from_dict(
        {
            "listen": [f"127.0.0.1:{free_udp_port()}"],
            "lns": f"127.0.0.1:{free_udp_port()}",
            "metrics": {"enabled": False},
            "control_socket": str(tmp_path / "control.sock"),
        }
    )
    failed: list[float] = []
    drop_counts: list[float] = []

    async def scenario() -> int:
        relay = Relay(config, loop=asyncio.get_running_loop())
        daemon = Service(config, relay, lambda: config, notifier=Notifier(environ={}))
        run = asyncio.create_task(daemon.run())
        deadline = time.monotonic() + WAIT
        while daemon.control is None:  # started: relay bound, reporter set, tick armed
            assert time.monotonic() < deadline and not run.done()
            await asyncio.sleep(0.02)

        def broken_idle_expiry(now: float | None = None) -> int:
            failed.append(time.monotonic())
            raise PermissionError(13, "Permission denied", "/proc/net/udp")

        update = relay.update_socket_drops

        def counted_update() -> int:
            drop_counts.append(time.monotonic())
            return update()

        relay.remove_idle = broken_idle_expiry  # type: ignore[method-assign]
        relay.update_socket_drops = counted_update  # type: ignore[method-assign]
        deadline = time.monotonic() + 3 * WAIT
        while len(failed) < 3:  # three ticks: one failure did not stop the next
            assert time.monotonic() < deadline, f"the tick stopped after {len(failed)}"
            await asyncio.sleep(0.05)
        daemon._request_stop(signal.SIGTERM)
        return await run

    with (
        caplog.at_level(logging.ERROR, logger="l2tpreorder"),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        code = runner.run(scenario())
    assert code == 0
    assert len(drop_counts) >= len(failed) - 1, "the steps after the failing one still ran"
    errors = [r for r in caplog.records if "housekeeping: idle peer expiry failed" in r.message]
    # Logged the 1st and 2nd time (then 4th, 8th...): not once per second for ever.
    assert [r.message.split("(")[1] for r in errors[:2]] == [
        "1 time so far); still running",
        "2 times so far); still running",
    ]
    assert errors[0].exc_info is not None and "Permission denied" in str(errors[0].exc_info[1])
