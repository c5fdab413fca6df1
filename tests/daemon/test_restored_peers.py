"""A LAC peer restored from the state file hears its LNS again (its upstream socket is read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon.test_daemon import base_config, data
from tests.daemon_harness import Daemon, free_udp_port, recv, udp

pytestmark = pytest.mark.integration


def test_lns_replies_reach_a_restored_peer(tmp_path: Path) -> None:
    listen, lns_port = free_udp_port(), free_udp_port()
    lns, lac = udp(port=lns_port), udp()
    cfg = base_config(
        [f"127.0.0.1:{listen}"],
        f"127.0.0.1:{lns_port}",
        state_file=str(tmp_path / "state.json"),
        control_socket=str(tmp_path / "control.sock"),
    )
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first = Daemon(tmp_path / "1", cfg)
    try:
        first.ready()
        lac.sendto(data(None), ("127.0.0.1", listen))
        _, upstream = recv(lns)
        assert first.terminate() == 0
    finally:
        first.stop()
    second = Daemon(tmp_path / "2", cfg)
    try:
        second.ready()
        second.wait_log("restored 0 sessions and 1 LAC peers")
        # The LNS speaks first after the restart (a hello, a CDN): the restored peer's socket
        # must be read although that LAC has sent nothing since.
        lns.sendto(b"\x00\x02from-the-lns", upstream)
        got, src = recv(lac)
        assert (got, src) == (b"\x00\x02from-the-lns", ("127.0.0.1", listen))
    finally:
        second.stop()
