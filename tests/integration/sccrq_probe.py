"""Send an SCCRQ with one Assigned Tunnel ID from several source addresses; report who got an
SCCRP. Run inside the test's network namespace (the addresses exist only there).

python sccrq_probe.py --to 198.18.2.1:1701 --tunnel-id 1 --source 198.18.1.1 --source 10.18.1.1
prints one JSON object: {"198.18.1.1": "SCCRP", "10.18.1.1": null, ...}
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time

from l2tpreorder.wire import (
    AvpValue,
    MessageType,
    avp_assigned_tunnel_id,
    avp_message_type,
    build_control,
    parse_control,
)

RETRANSMIT = 1.0  # seconds, as a LAC retransmits an unanswered SCCRQ


def sccrq(tunnel_id: int, host: str) -> bytes:
    """A minimal valid SCCRQ (RFC 2661 5.1.1): type, protocol version, host name, framing
    capabilities, assigned tunnel ID."""
    return build_control(
        0, 0, 0, 0,
        [
            avp_message_type(MessageType.SCCRQ),
            AvpValue(2, b"\x01\x00"),  # Protocol Version 1.0
            AvpValue(7, host.encode()),  # Host Name
            AvpValue(3, b"\x00\x00\x00\x03"),  # Framing Capabilities: sync + async
            avp_assigned_tunnel_id(tunnel_id),
        ],
    )  # fmt: skip


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--to", required=True, help="HOST:PORT of the LNS or the relay")
    p.add_argument("--tunnel-id", type=int, required=True)
    p.add_argument("--source", action="append", required=True, help="LAC source address")
    p.add_argument("--wait", type=float, default=8.0, help="seconds to wait for every answer")
    args = p.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    to = (host, int(port))
    socks = {}
    for source in args.source:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source, 0))
        socks[source] = s
    got: dict[str, str | None] = dict.fromkeys(args.source)
    deadline = time.monotonic() + args.wait
    next_send = 0.0
    while time.monotonic() < deadline and None in got.values():
        if time.monotonic() >= next_send:
            for source, s in socks.items():
                if got[source] is None:
                    s.sendto(sccrq(args.tunnel_id, f"lac-{source}"), to)
            next_send = time.monotonic() + RETRANSMIT
        ready, _, _ = select.select(list(socks.values()), [], [], 0.1)
        for s in ready:
            data = s.recv(65535)
            source = s.getsockname()[0]
            msg = parse_control(data) if data and data[0] & 0x80 else "data"
            if not isinstance(msg, str) and msg.message_type is not None:
                got[source] = msg.name
    print(json.dumps(got))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
