"""Runs INSIDE the container (Debian's python3, the installed package): a LAC and an LNS on the
container's loopback, packets built with l2tpreorder.wire. Output is JSON lines on stdout.

  agent.py lns COUNT SECONDS   bind the LNS port, print "ready", then one line per datagram
                               received: {"ns": out_ns, "payload": "..."} until COUNT or SECONDS
  agent.py lac SESSION NS...   send one data packet per Ns (payload "p<Ns>") from LAC_PORT
  agent.py flood SECONDS       swapped pairs on 20 sessions at ~2000/s with an LNS sink; prints
                               {"sent": n, "received": m}
"""

from __future__ import annotations

import json
import socket
import sys
import time

from l2tpreorder.wire import build_data, parse_header_reference

RELAY = ("127.0.0.1", 1701)
LNS = ("127.0.0.1", 1702)
LAC_PORT = 40001  # fixed: the same LAC peer across daemon restarts and reboots
TUNNEL_ID = 7


def lns(count: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(LNS)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    got = 0
    while got < count and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            break
        header = parse_header_reference(data)
        ns = header.get("ns") if isinstance(header, dict) else None
        print(json.dumps({"ns": ns, "payload": data[-8:].decode(errors="replace")}), flush=True)
        got += 1


def lac(session_id: int, ns_list: list[int]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", LAC_PORT))
    for ns in ns_list:
        sock.sendto(build_data(TUNNEL_ID, session_id, f"p{ns:07d}".encode(), ns=ns), RELAY)
        time.sleep(0.005)  # in order on the wire, one at a time


def flood(seconds: float) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(LNS)
    sink.setblocking(False)
    lac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = received = 0
    ns = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for session in range(100, 120):  # Ns ns+1 before ns: every pair is reordered
            for n in (ns + 1, ns):
                lac.sendto(build_data(TUNNEL_ID, session, b"f" * 8, ns=n & 0xFFFF), RELAY)
                sent += 1
        ns += 2
        while True:
            try:
                sink.recv(65535)
                received += 1
            except BlockingIOError:
                break
        time.sleep(0.02)
    drain_until = time.monotonic() + 2.0
    sink.setblocking(True)
    while received < sent and time.monotonic() < drain_until:
        sink.settimeout(max(0.01, drain_until - time.monotonic()))
        try:
            sink.recv(65535)
            received += 1
        except TimeoutError:
            break
    print(json.dumps({"sent": sent, "received": received}), flush=True)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "lns":
        lns(int(args[0]), float(args[1]))
    elif command == "lac":
        lac(int(args[0]), [int(a) for a in args[1:]])
    elif command == "flood":
        flood(float(args[0]))
    else:
        sys.exit(f"unknown command {command}")
