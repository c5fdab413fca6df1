"""The /metrics collector against a real ReorderEngine fed real L2TP datagrams (no mocks)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path
from platform import python_version

import pytest
from prometheus_client import generate_latest

from l2tpreorder import BUILD, __version__
from l2tpreorder.daemon.metrics import MetricsConfig, build_registry, start_metrics_server
from l2tpreorder.wire import build_data
from tests.conftest import PROJECT_ROOT, need_tool
from tests.impaired_traffic import (
    GAP_SESSION,
    QUIET_SESSION,
    SWAP_SESSION,
    ImpairedTraffic,
    impaired_traffic,
)
from tests.metrics_helpers import Samples, Source, drive, matching, parse, value

PEER = ("192.0.2.10", 1701)
TIMEOUT = 0.05
D = "lac_to_lns"


def scrape(source: Source, **config: object) -> str:
    return generate_latest(build_registry(MetricsConfig(**config), source)).decode()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def driven() -> tuple[Source, ImpairedTraffic]:
    source = Source.with_timeout(TIMEOUT)
    traffic = impaired_traffic(TIMEOUT)
    drive(source.engines[D], traffic, PEER)
    source.relay.rx_datagrams_lac = traffic.datagrams
    source.relay.rx_bytes_lac = traffic.bytes_sent
    return source, traffic


def test_counters_match_what_the_traffic_did(driven: tuple[Source, ImpairedTraffic]) -> None:
    source, t = driven
    s = parse(scrape(source))
    assert t.swaps == 30 and t.withheld == 5
    assert value(s, "l2tpreorder_released_packets_total", direction=D) == t.swaps + t.withheld
    assert (
        value(s, "l2tpreorder_skipped_sequence_numbers_total", direction=D, reason="timeout")
        == t.withheld
    )
    # Late packets are delivered with the next Ns (renumber's reorder.late default), not dropped.
    assert value(s, "l2tpreorder_dropped_packets_total", direction=D, reason="late") == 0
    assert value(s, "l2tpreorder_forwarded_packets_total", direction=D, kind="data_late") == t.late
    assert (
        value(s, "l2tpreorder_dropped_packets_total", direction=D, reason="duplicate")
        == t.duplicates
    )
    assert (
        value(s, "l2tpreorder_dropped_packets_total", direction=D, reason="malformed")
        == t.malformed_too_short
    )
    assert (
        value(s, "l2tpreorder_malformed_packets_total", direction=D, reason="too_short")
        == t.malformed_too_short
    )
    assert value(s, "l2tpreorder_received_packets_total", direction=D, kind="control") == t.control
    assert (
        value(s, "l2tpreorder_received_packets_total", direction=D, kind="data_without_ns")
        == t.data_without_ns
    )
    assert value(s, "l2tpreorder_received_packets_total", direction=D, kind="data_with_ns") == sum(
        t.sequenced.values()
    )
    assert value(s, "l2tpreorder_hold_time_seconds_count", direction=D) == t.swaps + t.withheld
    # Every swap was one position early; every held gap successor too.
    assert (
        value(s, "l2tpreorder_reorder_displacement_packets_bucket", direction=D, le="1.0")
        == t.swaps + t.withheld
    )
    # The withheld gaps' successors waited one full timeout; swaps waited 10 us.
    assert value(s, "l2tpreorder_hold_time_seconds_bucket", direction=D, le="0.0005") == t.swaps
    assert (
        value(s, "l2tpreorder_hold_time_seconds_bucket", direction=D, le="0.05")
        == t.swaps + t.withheld
    )
    assert value(s, "l2tpreorder_reorder_timeout_seconds", direction=D) == TIMEOUT
    assert value(s, "l2tpreorder_sessions", direction=D) == 3
    assert value(s, "l2tpreorder_held_packets", direction=D) == 0
    assert value(s, "l2tpreorder_socket_received_datagrams_total", direction=D) == t.datagrams
    assert value(s, "l2tpreorder_socket_received_bytes_total", direction=D) == t.bytes_sent
    assert (
        value(
            s,
            "l2tpreorder_build_info",
            version=__version__,
            python_version=python_version(),
            build=BUILD,
        )
        == 1
    )
    # Without reorder.lns_to_lac there is no LNS->LAC engine, so none of its series; the
    # socket counters exist for both directions always.
    assert matching(s, "l2tpreorder_received_packets_total", direction="lns_to_lac") == {}
    assert matching(s, "l2tpreorder_held_packets", direction="lns_to_lac") == {}
    assert value(s, "l2tpreorder_socket_received_datagrams_total", direction="lns_to_lac") == 0


def test_both_engines_export_both_directions_from_the_start() -> None:
    """With reorder.lns_to_lac both engines are exported, zeros included, so dashboards show
    both lines before the first LNS->LAC packet."""
    source = Source.with_timeout(TIMEOUT, lns_to_lac=True)
    s = parse(scrape(source))
    for direction in ("lac_to_lns", "lns_to_lac"):
        assert (
            value(s, "l2tpreorder_received_packets_total", direction=direction, kind="data_with_ns")
            == 0
        )
        assert value(s, "l2tpreorder_held_packets", direction=direction) == 0


def test_every_datagram_has_one_outcome_in_the_export(
    driven: tuple[Source, ImpairedTraffic],
) -> None:
    source, _ = driven
    s = parse(scrape(source))
    received = sum(matching(s, "l2tpreorder_received_packets_total", direction=D).values())
    forwarded = sum(matching(s, "l2tpreorder_forwarded_packets_total", direction=D).values())
    dropped = sum(
        v
        for labels, v in matching(s, "l2tpreorder_dropped_packets_total", direction=D).items()
        # The relay's own drops (before the engine) are not engine outcomes.
        if not labels & {("reason", "not_allowed"), ("reason", "peer_limit")}
    )
    released = value(s, "l2tpreorder_released_packets_total", direction=D)
    held = value(s, "l2tpreorder_held_packets", direction=D)
    assert received == source.engines[D].counters.received > 0
    assert received == forwarded + dropped + released + held


def test_no_created_series_and_every_family_documented(
    driven: tuple[Source, ImpairedTraffic],
) -> None:
    text = scrape(driven[0], per_session=True)
    assert "_created" not in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    assert names == helps
    ours = {n for n in names if n.startswith("l2tpreorder_")}
    assert len(ours) >= 25
    assert "process_cpu_seconds_total" in names and "process_resident_memory_bytes" in names


def test_per_session_series_are_opt_in(driven: tuple[Source, ImpairedTraffic]) -> None:
    s = parse(scrape(driven[0]))
    assert not [k for k in s if k[0].startswith("l2tpreorder_session_received")]


def test_per_session_series_capped_to_top_n_by_traffic(
    driven: tuple[Source, ImpairedTraffic],
) -> None:
    source, t = driven
    s: Samples = parse(scrape(source, per_session=True, per_session_top_n=2))
    per_session = matching(s, "l2tpreorder_session_received_packets_total", direction=D)
    got = {dict(labels)["session_id"]: v for labels, v in per_session.items()}
    # The quiet session (5 packets) is the one left out; the two busy ones are exported.
    assert got == {
        str(SWAP_SESSION): t.sequenced[SWAP_SESSION],
        str(GAP_SESSION): t.sequenced[GAP_SESSION],
    }
    assert str(QUIET_SESSION) not in got
    assert value(s, "l2tpreorder_session_series_omitted", direction=D) == 1
    swap = {"direction": D, "peer": "192.0.2.10:1701", "tunnel_id": "7"}
    # The swap session alone: released == swaps made (nothing else was held there).
    assert (
        value(s, "l2tpreorder_session_released_packets_total", session_id=str(SWAP_SESSION), **swap)
        == t.swaps
    )
    assert (
        value(
            s,
            "l2tpreorder_session_skipped_sequence_numbers_total",
            session_id=str(GAP_SESSION),
            **swap,
        )
        == t.withheld
    )


def test_scrapes_while_the_relay_thread_churns_sessions() -> None:
    """The scrape thread walks sessions the relay thread is adding and ending: no exception."""
    source = Source.with_timeout(TIMEOUT)
    engine = source.engines[D]
    registry = build_registry(MetricsConfig(per_session=True, per_session_top_n=5), source)
    stop = threading.Event()
    fed = [0]

    def relay() -> None:
        now = 0.0
        while not stop.is_set() and fed[0] < 2_000_000:
            for sid in range(1, 200):
                now += 1e-4
                engine.receive(build_data(1, sid, b"x", ns=fed[0] & 0xFFFF), PEER, now)
                fed[0] += 1
            for sid in range(1, 200, 2):
                engine.end_session(PEER, 1, sid, now)
            engine.take_output()

    thread = threading.Thread(target=relay)
    thread.start()
    try:
        scrapes = 0
        while scrapes < 200 and thread.is_alive():
            generate_latest(registry)
            scrapes += 1
    finally:
        stop.set()
        thread.join()
    assert scrapes == 200 and fed[0] > 0


def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_server_defaults_to_loopback_and_serves_metrics(
    driven: tuple[Source, ImpairedTraffic],
) -> None:
    assert MetricsConfig().listen == "127.0.0.1"
    server = start_metrics_server(MetricsConfig(port=0), driven[0])
    try:
        text = _get(f"http://127.0.0.1:{server.port}/metrics")
        assert "l2tpreorder_released_packets_total" in text
    finally:
        server.close()


def test_server_speaks_tls_when_configured(
    tmp_path: Path, driven: tuple[Source, ImpairedTraffic]
) -> None:
    openssl = need_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    config = MetricsConfig(port=0, tls_cert=str(cert), tls_key=str(key))
    server = start_metrics_server(config, driven[0])
    try:
        context = ssl.create_default_context(cafile=str(cert))
        text = _get(f"https://127.0.0.1:{server.port}/metrics", context)
        assert "l2tpreorder_build_info" in text
        with pytest.raises(OSError):  # plain HTTP is refused
            _get(f"http://127.0.0.1:{server.port}/metrics")
        # A client that connects and never starts the handshake does not block other scrapes
        # (the handshake runs in the scrape's thread, not in the listener's accept()).
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            text = _get(f"https://127.0.0.1:{server.port}/metrics", context)
            assert "l2tpreorder_build_info" in text
    finally:
        server.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 70000}, "metrics.port"),
        ({"per_session_top_n": 0}, "metrics.per_session_top_n"),
        ({"tls_cert": "/x.pem"}, "metrics.tls_cert"),
    ],
)
def test_config_errors_name_the_key(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MetricsConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.parametrize("per_session", [False, True])
def test_promtool_check_metrics_has_no_warnings(
    driven: tuple[Source, ImpairedTraffic], per_session: bool
) -> None:
    promtool = need_tool("promtool")
    text = scrape(driven[0], per_session=per_session)
    run = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "" and run.stderr.strip() == "", run.stdout + run.stderr


@pytest.mark.integration
def test_promtool_check_and_test_rules() -> None:
    promtool = need_tool("promtool")
    rules = PROJECT_ROOT / "prometheus"
    check = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"],
        cwd=rules, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 12 rules found" in check.stdout
    test = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=rules, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout
