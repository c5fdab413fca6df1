"""The shared service's behaviours, each ONE test body run against relay mode and in-path mode.

A behaviour that exists in one mode only is a red test here (issue 20: the two service copies
had drifted). Every test drives a real `l2tpreorder run` (tests/mode_harness.py) and observes
only what an operator can: the log, `status --json` and `reload`, /metrics, sd_notify, and the
datagrams the LNS (or the LAC) receives.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from l2tpreorder import wire
from tests.daemon_harness import WAIT, free_udp_port, nothing_waiting
from tests.integration.inpath_helpers import frame_of, metric, ns_of
from tests.mode_harness import (
    S_LNS,
    STARTING,
    T_LNS,
    ModeRig,
    families,
    to_lac,
    to_lns,
)
from tests.netns import wait_until

pytestmark = [pytest.mark.integration]


def one_session(rig: ModeRig) -> None:
    """Ns 0 of the test's session through to the LNS: from now on status lists a session."""
    rig.send_to_lns(to_lns(0))
    assert [ns_of(d) for d in rig.lns_receive(1)] == [0]


def timeouts(rig: ModeRig) -> list[float]:
    return [s["timeout_ms"] for s in rig.sessions()]


def timeout_seconds(rig: ModeRig) -> set[float]:
    """Every `l2tpreorder_reorder_timeout_seconds` sample (one per direction, or per queue)."""
    found = re.findall(
        r"^l2tpreorder_reorder_timeout_seconds(?:\{[^}]*\})? (\S+)$", rig.scrape(), re.M
    )
    assert found, "no l2tpreorder_reorder_timeout_seconds sample"
    return {float(v) for v in found}


def log_since(rig: ModeRig, mark: int) -> str:
    return rig.d.log()[mark:]


# --- reload -----------------------------------------------------------------------------------


def test_reload_applies_the_file_and_says_so_in_its_keys_and_units(rig: ModeRig) -> None:
    rig.start({"reorder": {"timeout_ms": 100}})
    one_session(rig)
    assert timeouts(rig) == [100]
    mark = rig.log_size()
    rig.write_config(reorder={"timeout_ms": 40})
    rig.d.reload()  # SIGHUP, then RELOADING=1 ... READY=1: applied by now
    assert timeouts(rig) == [40]
    assert timeout_seconds(rig) == {0.04}
    log = log_since(rig, mark)
    # The operator wrote `reorder.timeout_ms: 40`: the log says that, not the program's names.
    assert re.search(r"reload: reorder\.timeout_ms: 100 -> 40$", log, re.M), log


def test_reload_of_a_broken_file_keeps_the_running_config_and_says_why(rig: ModeRig) -> None:
    rig.start({"reorder": {"timeout_ms": 100}})
    one_session(rig)
    text = rig.scrape()
    assert metric(text, "l2tpreorder_config_last_reload_successful") == 1
    assert metric(text, "l2tpreorder_config_load_failing") == 0  # deprecated, kept one release
    loaded_at = metric(text, "l2tpreorder_config_last_reload_success_timestamp_seconds")
    assert loaded_at > 0  # the start's load counts: Prometheus and node_exporter do the same
    mark = rig.log_size()
    rig.write_config(reorder={"timeout_ms": "soon"})
    refused = rig.reload_command()
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "timeout_ms" in refused.stderr and "soon" in refused.stderr, refused.stderr
    log = log_since(rig, mark)
    assert re.search(r"reload failed.*timeout_ms.*soon", log), log
    assert rig.d.proc.poll() is None
    assert timeouts(rig) == [100]  # the running configuration
    text = rig.scrape()
    assert metric(text, "l2tpreorder_config_last_reload_successful") == 0
    assert metric(text, "l2tpreorder_config_load_failing") == 1
    assert metric(text, "l2tpreorder_config_last_reload_success_timestamp_seconds") == loaded_at
    assert metric(text, "l2tpreorder_config_reloads_total", result="failure") == 1

    rig.write_config(reorder={"timeout_ms": 60})
    applied = rig.reload_command()
    assert applied.returncode == 0, applied.stderr
    assert timeouts(rig) == [60]
    text = rig.scrape()
    assert metric(text, "l2tpreorder_config_last_reload_successful") == 1
    assert metric(text, "l2tpreorder_config_load_failing") == 0
    assert metric(text, "l2tpreorder_config_last_reload_success_timestamp_seconds") > loaded_at
    assert metric(text, "l2tpreorder_config_reloads_total", result="success") == 1


def test_reload_warns_when_a_command_line_flag_overrides_the_file(rig: ModeRig) -> None:
    rig.start({"reorder": {"timeout_ms": 100}}, args=("--timeout", "50"))
    one_session(rig)
    assert timeouts(rig) == [50]
    mark = rig.log_size()
    rig.write_config(reorder={"timeout_ms": 40})
    rig.d.reload()
    assert timeouts(rig) == [50]  # the flag still wins...
    assert timeout_seconds(rig) == {0.05}
    log = log_since(rig, mark)
    # ...and the reload says so, naming the flag (the exact words are the reload report's).
    warnings = [line for line in log.splitlines() if "WARNING" in line and "--timeout" in line]
    assert any("overrides" in line for line in warnings), log


def test_reload_moves_the_metrics_endpoint(rig: ModeRig) -> None:
    rig.start({})
    old = rig.metrics_port
    assert rig.serves_metrics(old)
    new = rig.free_tcp_port()
    rig.write_config(metrics={"port": new})
    rig.d.reload()
    assert rig.serves_metrics(new), f"nothing serves /metrics on the new port {new}"
    assert not rig.serves_metrics(old), f"the old port {old} still serves /metrics"


# The start checks (daemon/start_checks.py) also run in the in-path supervisor: its cases too.
@pytest.mark.parametrize("rig", STARTING, indirect=True)
def test_a_metrics_port_held_by_another_process_fails_the_start_naming_the_setting(
    rig: ModeRig,
) -> None:
    """Metrics enabled but not served would let Prometheus scrape whatever holds the port
    (issue 24: the HAProxy exporter on 9101) and never notice: the start fails instead."""
    other = rig.hold_tcp_port(rig.metrics_port)
    try:
        daemon = rig.launch({})
        code = daemon.proc.wait(WAIT * 3)
    finally:
        other.close()
    assert code != 0, daemon.log()
    errors = [line for line in daemon.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1, daemon.log()
    assert f"127.0.0.1:{rig.metrics_port}" in errors[0], errors
    assert "metrics.port" in errors[0] and "not starting" in errors[0], errors
    assert not any("READY=1" in m for m in daemon.messages), daemon.messages
    assert "worker for NFQUEUE" not in daemon.log(), daemon.log()  # the supervisor started none


def test_a_reload_to_a_taken_metrics_port_keeps_the_old_listener_and_says_why(
    rig: ModeRig,
) -> None:
    rig.start({})
    old = rig.metrics_port
    taken = rig.free_tcp_port()
    other = rig.hold_tcp_port(taken)
    try:
        rig.write_config(metrics={"port": taken})
        answer = rig.reload_command()
    finally:
        other.close()
    assert answer.returncode == 0, answer.stderr
    assert f"127.0.0.1:{taken}" in answer.stderr and "metrics.port" in answer.stderr, answer
    assert f"still serving on 127.0.0.1:{old}" in answer.stderr, answer.stderr
    assert rig.serves_metrics(old), f"the old endpoint {old} stopped serving"
    assert rig.d.proc.poll() is None
    # Not applied, so the next reload tries again: with the port free now, it moves.
    assert rig.reload_command().returncode == 0
    assert rig.serves_metrics(taken), f"a later reload left /metrics off {taken}: {rig.d.log()}"
    assert not rig.serves_metrics(old)


# --- one host, two instances -------------------------------------------------------------------


@pytest.mark.parametrize("rig", STARTING, indirect=True)
def test_a_second_instance_on_the_same_control_socket_refuses_to_start(rig: ModeRig) -> None:
    """Two instances sharing one control socket path: `status --config B` would answer for A
    (issue 24). The second one refuses before binding anything, naming `control_socket`."""
    first = rig.start({})
    own_ports: dict[str, object] = {"metrics": {"port": rig.free_tcp_port()}}
    if rig.mode == "relay":
        own_ports["listen"] = [f"127.0.0.1:{free_udp_port()}"]
    try:
        second = rig.launch(own_ports)  # the same control_socket (the rig's), other ports
        code = second.proc.wait(WAIT * 3)
        log = second.log()
        second.stop()
    finally:
        rig.daemon = first  # the first one is stopped with the rig
    assert code == 78, log  # EX_CONFIG: systemd does not retry a config fault
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert "another l2tpreorder answers there" in errors[0], errors
    assert "control_socket" in errors[0] and "not starting" in errors[0], errors
    assert "metrics: http" not in log  # it bound nothing
    assert first.proc.poll() is None
    assert rig.status()["pid"] == first.proc.pid  # status still reaches the first one


# --- systemd -----------------------------------------------------------------------------------


def test_notifies_ready_with_a_status_then_watchdog_pings_then_stopping(rig: ModeRig) -> None:
    """systemd's protocol: READY=1 with a STATUS= line, WATCHDOG=1 well within WATCHDOG_USEC
    (the unit's WatchdogSec= kills a daemon that stops pinging), STOPPING=1 at SIGTERM."""
    rig.start({}, env={"WATCHDOG_USEC": "300000"})
    assert any("STATUS=" in m for m in rig.d.messages if "READY=1" in m.split("\n")), rig.d.messages
    for _ in range(3):
        rig.d.wait_notify("WATCHDOG=1")
    assert rig.terminate() == 0
    rig.d.wait_notify("STOPPING=1")


# --- state, flush, accounting -----------------------------------------------------------------


def test_renumbering_continues_across_a_restart_in_both_directions(
    rig: ModeRig, tmp_path: Path
) -> None:
    """Ns 3 is lost each way (given up when a second packet waits: the cap, not a timer), so
    renumbering runs one behind the sender's Ns; after SIGTERM and a restart with the state
    file, both the LNS and the LAC see Ns carry on (not restart at the sender's numbering, nor
    at 0)."""
    reorder = {"timeout_ms": 30000, "max_held_per_session": 1, "sequencing": "renumber"}
    rig.start(
        {
            "reorder": {**reorder, "lns_to_lac": True},
            "state_file": str(tmp_path / "state.json"),
        }
    )
    sent = (0, 1, 2, 4, 5)
    rig.send_to_lns(*(to_lns(n) for n in sent))
    got = rig.lns_receive(len(sent))
    assert [frame_of(d) for d in got] == list(sent)
    assert [ns_of(d) for d in got] == [0, 1, 2, 3, 4]
    rig.send_to_lac(*(to_lac(n) for n in sent))
    got = rig.lac_receive(len(sent))
    assert [frame_of(d) for d in got] == list(sent)
    assert [ns_of(d) for d in got] == [0, 1, 2, 3, 4]

    rig.restart()
    rig.send_to_lns(to_lns(6), to_lns(7))
    got = [ns_of(d) for d in rig.lns_receive(2)]
    assert got == [5, 6], f"LAC -> LNS numbering lost across the restart: {got}"
    rig.send_to_lac(to_lac(6), to_lac(7))
    got = [ns_of(d) for d in rig.lac_receive(2)]
    assert got == [5, 6], f"LNS -> LAC numbering lost across the restart: {got}"


def test_sigterm_delivers_what_is_held_in_order_and_exits_0(rig: ModeRig) -> None:
    rig.start({"reorder": {"timeout_ms": 5000}})
    one_session(rig)
    rig.send_to_lns(*(to_lns(n) for n in (3, 2, 5, 4)))  # all held: Ns 1 is missing
    wait_until("status shows 4 held", lambda: rig.status()["totals"]["held"] == 4)
    assert rig.terminate() == 0, rig.d.log()
    got = rig.lns_receive(4)
    assert [frame_of(d) for d in got] == [2, 3, 4, 5]
    assert [ns_of(d) for d in got] == [1, 2, 3, 4]  # renumbered over the given-up Ns 1
    assert nothing_waiting(rig.lns), "more reached the LNS than was sent"
    rig.d.wait_notify("STOPPING=1")


def optional(text: str, name: str, **labels: str) -> float:
    """Like `metric`, 0 when the family has no such sample (a mode-only outcome)."""
    try:
        return metric(text, name, **labels)
    except AssertionError:
        return 0.0


def test_every_datagram_has_exactly_one_counted_outcome(rig: ModeRig) -> None:
    """In order, reordered, duplicate, late, control, unsequenced and malformed L2TPv2: each is
    counted in once, has exactly one outcome (forwarded, released, dropped by reason, held, or
    in-path's passed untouched), and the LNS gets exactly those counted as passed on."""
    # One held packet at most: the gap before a second one is given up at once (no timer).
    rig.start({"reorder": {"timeout_ms": 30000, "max_held_per_session": 1}})
    first = [to_lns(n) for n in (0, 2, 1, 1, 4, 5)]  # 2 early, 1 twice, 3 lost
    rig.send_to_lns(*first)
    assert [frame_of(d) for d in rig.lns_receive(5)] == [0, 1, 2, 4, 5]
    hello = wire.build_control(T_LNS, 0, 5, 0, [wire.avp_message_type(wire.MessageType.HELLO)])
    unsequenced = wire.build_data(T_LNS, S_LNS, b"unsequenced")
    malformed = b"\x02\x02"  # L2TPv2 version bits, too short for a header
    end = wire.build_data(T_LNS, S_LNS, b"end of test")
    # 3 comes late (given up): delivered with the next Ns (reorder.late: auto, renumber mode)
    second = [to_lns(3), hello, unsequenced, malformed, end]
    rig.send_to_lns(*second)
    delivered = 5
    while rig.lns_receive(1)[0] != end:  # the last one out: everything before it is counted
        delivered += 1
    delivered += 1
    sent = len(first) + len(second)

    text = rig.scrape()
    d = {"direction": "lac_to_lns"}
    received = metric(text, "l2tpreorder_received_packets_total", **d)
    forwarded = metric(text, "l2tpreorder_forwarded_packets_total", **d)
    released = metric(text, "l2tpreorder_released_packets_total", **d)
    dropped = metric(text, "l2tpreorder_dropped_packets_total", **d)
    held = metric(text, "l2tpreorder_held_packets", **d)
    passed = optional(text, "l2tpreorder_inpath_passed_not_ours_total")
    assert metric(text, "l2tpreorder_dropped_packets_total", reason="duplicate", **d) == 1
    assert metric(text, "l2tpreorder_forwarded_packets_total", kind="data_late", **d) == 1
    assert received == sent, f"{received} counted in of {sent} sent (the malformed one too)"
    outcomes = forwarded + released + dropped + held + passed
    assert outcomes == sent, (forwarded, released, dropped, held, passed)
    assert delivered == forwarded + released + passed


# --- logging ----------------------------------------------------------------------------------


def test_drops_are_reported_at_the_report_interval(rig: ModeRig) -> None:
    rig.start({"logging": {"level": "info", "drop_report_interval_ms": 100}})
    malformed = b"\x02\x02"  # L2TPv2 version bits, too short for a header
    rig.send_to_lns(to_lns(0), to_lns(1), to_lns(1), to_lns(0), malformed)
    assert [frame_of(d) for d in rig.lns_receive(2)] == [0, 1]
    rig.wait_log(r"\d+ dropped in the last [\d.]+ s \(reason \S*duplicate, \d+ total\)")
    # Relay mode drops a malformed datagram, in-path mode passes it on untouched: the report
    # says which (MalformedPolicy), never "dropped" for one that went on.
    what = "dropped" if rig.mode == "relay" else "malformed, passed on untouched"
    rig.wait_log(rf"1 {what} in the last [\d.]+ s \(reason lac_to_lns:malformed:too_short")


def test_debug_lines_name_drops_and_new_sessions(rig: ModeRig) -> None:
    rig.start({"logging": {"level": "debug"}})
    rig.send_to_lns(to_lns(0), to_lns(0))
    rig.lns_receive(1)
    lac = re.escape(rig.lac_address)
    rig.wait_log(rf"dropped from LAC {lac}: tunnel_id {T_LNS} session_id {S_LNS} Ns 0: duplicate")
    rig.wait_log(rf"session started: LAC {lac} tunnel_id {T_LNS} session_id {S_LNS}, at Ns \d+")


# --- status and metrics: one shape --------------------------------------------------------------

STATUS_KEYS = {"ok", "mode", "pid", "uptime_s", "status", "config", "totals", "peers"}
PEER_KEYS = {"lac", "upstream", "last_seen_s", "sessions"}
SESSION_KEYS = {
    "tunnel_id", "session_id", "packets", "reordered", "held", "skipped", "late",
    "late_delivered", "duplicates",
    "stale", "far_ahead", "timeout_ms", "confirmed", "last_seen_s", "age_s",
}  # fmt: skip
TOTALS_KEYS = {
    "peers", "sessions", "held", "rx_datagrams_lac", "rx_datagrams_lns", "reordered",
    "dropped_late", "dropped_duplicate", "dropped_stale", "dropped_far_ahead",
    "dropped_malformed", "late_delivered",
}  # fmt: skip
# What docs/control.md documents as one mode's own; a key named after the mode may hold more.
STATUS_EXTRAS = {"relay": {"relay", "lns", "lns_health"}, "inpath": {"inpath", "queues"}}
PEER_EXTRAS = {"relay": {"relay"}, "inpath": {"inpath", "queue"}}


def test_status_json_has_one_shape_in_both_modes(rig: ModeRig) -> None:
    rig.start({"reorder": {"timeout_ms": 30000}})
    one_session(rig)
    rig.send_to_lns(to_lns(2))  # held: 1 is missing
    wait_until("status shows 1 held", lambda: rig.status()["totals"]["held"] == 1)
    answer = rig.status()
    assert answer["ok"] is True
    assert answer.get("mode") == rig.mode, "the answer names its mode (which extras to expect)"
    assert answer["pid"] == rig.d.proc.pid
    assert set(answer) >= STATUS_KEYS, STATUS_KEYS - set(answer)
    assert set(answer) - STATUS_KEYS <= STATUS_EXTRAS[rig.mode], set(answer) - STATUS_KEYS
    assert set(answer["totals"]) == TOTALS_KEYS
    [peer] = answer["peers"]
    assert peer["lac"] == rig.lac_address
    assert set(peer) >= PEER_KEYS and set(peer) - PEER_KEYS <= PEER_EXTRAS[rig.mode], set(peer)
    [session] = peer["sessions"]
    assert set(session) >= SESSION_KEYS, SESSION_KEYS - set(session)
    assert set(session) - SESSION_KEYS <= PEER_EXTRAS[rig.mode], set(session)
    assert (session["tunnel_id"], session["session_id"]) == (T_LNS, S_LNS)
    assert (session["packets"], session["held"], session["timeout_ms"]) == (2, 1, 30000)


# The engine's, the sessions' and the service's families (README "Metrics"), in both modes.
COMMON_FAMILIES = {
    f"l2tpreorder_{name}"
    for name in (
        "received_packets_total", "malformed_packets_total", "forwarded_packets_total",
        "released_packets_total", "dropped_packets_total", "skipped_sequence_numbers_total",
        "hold_time_seconds", "reorder_displacement_packets", "held_packets", "held_bytes",
        "held_bytes_limit", "session_held_packets_limit", "session_held_packets_max",
        "reorder_timeout_seconds", "session_timeout_seconds", "session_timeout_seconds_gcount",
        "session_timeout_seconds_gsum", "adaptive_timeout_grows_total", "sessions",
        "sessions_started_total", "sessions_ended_total", "resyncs_total",
        "sessions_continued_total", "sessions_evicted_total", "sessions_limit",
        "sessions_evicted_active_total", "sessions_idle_expired_total",
        "session_received_packets_total", "session_released_packets_total",
        "session_late_delivered_packets_total",
        # Both modes count datagrams read and sent (daemon/counters.py; in-path: per queue).
        "socket_received_datagrams_total", "socket_sent_datagrams_total",
        "session_dropped_packets_total", "session_skipped_sequence_numbers_total",
        "session_held_packets", "session_series_omitted",
        "config_reloads_total", "config_last_reload_successful",
        "config_last_reload_success_timestamp_seconds", "build_info",
        # Deprecated names, kept one release (README "Renamed metrics").
        "held_limit_bytes", "config_load_failing",
    )
} | {  # the process's own (README: CPU, memory, file descriptors)
    "process_cpu_seconds_total", "process_max_fds", "process_open_fds",
    "process_resident_memory_bytes", "process_start_time_seconds",
    "process_virtual_memory_bytes", "python_info",
}  # fmt: skip
RELAY_FAMILIES = {
    f"l2tpreorder_{name}"
    for name in (
        "socket_received_bytes_total", "socket_sent_bytes_total", "socket_receive_drops_total",
        "send_errors_total", "peers", "peers_idle_expired_total", "lns_icmp_errors_total",
        "lns_unresponsive",
        "peers_removed_idle_total",  # deprecated, kept one release
    )
}  # fmt: skip


def mode_only(mode: str, name: str) -> bool:
    """Is family `name` one mode's own (README "Metrics": relay's sockets and peers;
    in-path's `l2tpreorder_inpath_*`)?"""
    return name in RELAY_FAMILIES if mode == "relay" else name.startswith("l2tpreorder_inpath_")


def test_metrics_families_are_the_same_in_both_modes(rig: ModeRig) -> None:
    rig.start({"reorder": {"timeout_ms": 30000}, "metrics": {"per_session": True}})
    one_session(rig)
    rig.send_to_lns(to_lns(2))  # held: the per-session families have a session to show
    wait_until("status shows 1 held", lambda: rig.status()["totals"]["held"] == 1)
    found = families(rig.scrape())
    common = {f for f in found if not mode_only(rig.mode, f)}
    assert common == COMMON_FAMILIES, (
        f"missing: {sorted(COMMON_FAMILIES - common)}; "
        f"not common (another mode's?): {sorted(common - COMMON_FAMILIES)}"
    )
