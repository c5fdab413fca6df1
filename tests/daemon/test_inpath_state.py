"""In-path mode keeps both directions' numbering across a restart (issue 20, drift 1: it used to
save and restore only the LAC-to-LNS engine, so with `reorder.lns_to_lac: true` a restart lost
the LNS-to-LAC numbering). A real worker's own save and restore (the one service around the
in-path adapter), without binding a queue: the packets go through its real adapter and
pipeline, the state file is really written and read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2tpreorder import wire
from l2tpreorder.config import Config, config_from_dict
from l2tpreorder.core.counters import LAC_TO_LNS, LNS_TO_LAC
from l2tpreorder.daemon.inpath.nfqueue import NF_INET_LOCAL_IN, NF_INET_LOCAL_OUT
from l2tpreorder.daemon.inpath.worker import READ_LIMIT, InPathMode
from l2tpreorder.daemon.sdnotify import Notifier
from l2tpreorder.daemon.service import Service
from tests.inpath_packets import handle
from tests.pcapgen import udp_ip

LAC, LNS = "192.0.2.1", "192.0.2.2"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()  # the adapter's; nothing is bound, so nothing runs on it
    yield loop
    loop.close()


def worker(path: Path, loop: asyncio.AbstractEventLoop) -> Service:
    document = {
        "mode": "inpath",
        "inpath": {"queue": 3},
        "reorder": {"timeout_ms": 50, "lns_to_lac": True},
        "state_file": str(path),
        "metrics": {"enabled": False},
    }
    config: Config = config_from_dict(document)
    mode = InPathMode(config, 3, loop=loop)
    return Service(
        config, mode, lambda: config, notifier=Notifier(environ={}), state_file=str(path)
    )


def up(ns: int) -> bytes:
    return udp_ip(LAC, LNS, wire.build_data(7, 9, b"up", ns=ns))


def down(ns: int) -> bytes:
    return udp_ip(LNS, LAC, wire.build_data(40, 41, b"down", ns=ns))


def test_a_restart_keeps_both_directions_numbering(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    path = tmp_path / "state.json"
    w = worker(path, loop)
    assert isinstance(w.mode, InPathMode)
    packets = [
        (1, NF_INET_LOCAL_IN, up(100), False),
        (2, NF_INET_LOCAL_IN, up(101), False),
        (3, NF_INET_LOCAL_OUT, down(500), False),
        (4, NF_INET_LOCAL_OUT, down(502), False),  # held: 501 missing
    ]
    handle(w.mode.adapter, packets, 0.0)
    w.mode.adapter.flush(1.0)  # what the shutdown does first: 502 goes out renumbered as 501
    w.stop_io()
    saved = json.loads(path.read_text())
    assert set(saved["directions"]) == {LAC_TO_LNS, LNS_TO_LAC}

    again = worker(path, loop)
    assert isinstance(again.mode, InPathMode)
    again.restore()
    assert not path.exists()  # consumed
    views = again.pipeline.directions()
    s_up = views[LAC_TO_LNS].session((LAC, 1701), 7, 9)
    s_down = views[LNS_TO_LAC].session((LAC, 1701), 40, 41)
    assert s_up is not None and (s_up.expected, s_up.out_ns) == (102, 102)
    assert s_down is not None and (s_down.expected, s_down.out_ns) == (503, 502)
    # The LAC sees the LNS's numbering go on: 503 leaves as 502 (the accept carries the
    # rewritten packet), no jump back to 503.
    messages = b"".join(handle(again.mode.adapter, [(5, NF_INET_LOCAL_OUT, down(503), False)], 2.0))
    assert wire.build_data(40, 41, b"down", ns=502) in messages
    assert wire.build_data(40, 41, b"down", ns=503) not in messages
    assert views[LNS_TO_LAC].counters.forwarded_in_order == 1


class Kernel:
    """The queue's config call, as the adapter makes it: records each maxlen."""

    def __init__(self) -> None:
        self.maxlens: list[int] = []

    def set_maxlen(self, maxlen: int) -> int:
        self.maxlens.append(maxlen)
        return 0


def bound(maxlen: int, loop: asyncio.AbstractEventLoop) -> tuple[InPathMode, Kernel]:
    """A worker as after its bind (without a queue: the kernel's side is recorded)."""
    config = config_from_dict(
        {"mode": "inpath", "inpath": {"queue": 3, "queue_maxlen": maxlen},
         "metrics": {"enabled": False}}
    )  # fmt: skip
    mode = InPathMode(config, 3, loop=loop)
    kernel = Kernel()
    mode.adapter.watch_overflow(maxlen, kernel.set_maxlen, READ_LIMIT)
    return mode, kernel


def test_the_queue_floor_is_saved_and_restored(loop: asyncio.AbstractEventLoop) -> None:
    """The sessions' numbering survives a restart, so must the floor that protects it
    (docs/inpath.md, "the floor"); only a raised one is saved, so that a lowered queue_maxlen
    takes effect; a bad value in the file is ignored, a huge one capped."""
    mode, _ = bound(64, loop)
    assert mode.state_extra()[0] == {"queue": 3}  # no episode: nothing to keep
    mode.adapter.restore_floor(500)  # as an episode would raise it
    extra = mode.state_extra()[0]
    assert extra == {"queue": 3, "kernel_maxlen_floor": 500}
    again, kernel = bound(64, loop)
    assert again.restore_extra(extra, 0.0) == " and the kernel queue maxlen floor 500"
    assert again.adapter.floor == again.kernel_maxlen == 500 and kernel.maxlens == [500]
    for bad in (True, 1.5, -3, "500", None):
        other, kernel = bound(64, loop)
        assert other.restore_extra({"queue": 3, "kernel_maxlen_floor": bad}, 0.0) == ""
        assert other.adapter.floor == 64 and kernel.maxlens == []
    huge, _ = bound(64, loop)
    huge.restore_extra({"queue": 3, "kernel_maxlen_floor": 10**30}, 0.0)
    assert huge.adapter.floor == 16 * 64  # the floor's cap
    smaller, _ = bound(16, loop)  # queue_maxlen lowered since: its own cap applies
    smaller.restore_extra(extra, 0.0)
    assert smaller.adapter.floor == 16 * 16
