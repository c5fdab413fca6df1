"""A stand-in for /usr/sbin/pppd that xl2tpd starts in userspace mode (no kernel L2TP/PPP here).

xl2tpd runs pppd with the pty slave on stdin/stdout and speaks async-HDLC on it: 0x7e flags,
0x7d escapes (byte xor 0x20), PPP frame + FCS-16. This program is bind-mounted over
/usr/sbin/pppd inside a private mount namespace only, so the host's pppd is never touched.

It is configured through the `pppoptfile` xl2tpd passes as `file PATH`: one `key value` per line.
  role lac|lns       lac writes numbered frames, lns reads them and records the numbers
  frames N           (lac) how many frames to send
  interval S         (lac) seconds between frames
  go PATH            (lac) wait until PATH exists before sending (the test's start signal)
  done PATH          (lac) created after the last frame
  ready PATH         (lns) created once the pty is in raw mode and being read
  results PATH       (lns) one received number per line, in arrival order
  log PATH           diagnostics (argv, bad frames)
Stdlib only: it runs under whatever python3 the wrapper names, outside the project venv.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
import tty
from pathlib import Path
from typing import TextIO

FLAG = 0x7E
ESCAPE = 0x7D
MAGIC = b"L2RX"
GOOD_FCS = 0xF0B8


def _fcs_table() -> list[int]:
    table = []
    for byte in range(256):
        v = byte
        for _ in range(8):
            v = (v >> 1) ^ 0x8408 if v & 1 else v >> 1
        table.append(v)
    return table


FCS_TABLE = _fcs_table()


def fcs16(data: bytes, fcs: int = 0xFFFF) -> int:
    """PPP FCS-16 (RFC 1662 §C.2), reflected CRC-CCITT."""
    for b in data:
        fcs = (fcs >> 8) ^ FCS_TABLE[(fcs ^ b) & 0xFF]
    return fcs


def hdlc_encode(frame: bytes) -> bytes:
    """Frame + FCS, with every byte < 0x20, 0x7d and 0x7e escaped, between two flags."""
    fcs = fcs16(frame) ^ 0xFFFF
    raw = frame + bytes((fcs & 0xFF, fcs >> 8))
    out = bytearray([FLAG])
    for b in raw:
        if b < 0x20 or b in (FLAG, ESCAPE):
            out += bytes((ESCAPE, b ^ 0x20))
        else:
            out.append(b)
    out.append(FLAG)
    return bytes(out)


def hdlc_unescape(chunk: bytes) -> bytes:
    out = bytearray()
    it = iter(chunk)
    for b in it:
        if b == ESCAPE:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def ipv4_frame(number: int) -> bytes:
    """PPP (ff 03, protocol 0x0021) carrying a minimal IPv4 packet whose payload holds `number`."""
    payload = MAGIC + struct.pack("!I", number) + bytes(range(32))  # low bytes exercise escaping
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, number & 0xFFFF, 0, 64, 253, 0,
        bytes((198, 19, 0, 1)), bytes((198, 19, 0, 2)),
    )
    csum = _ip_checksum(header)
    header = header[:10] + struct.pack("!H", csum) + header[12:]
    return b"\xff\x03\x00\x21" + header + payload


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame_number(frame: bytes) -> int | None:
    """The number carried by one unescaped frame (FCS included), or None if it is not ours."""
    if len(frame) < 4 or fcs16(frame) != GOOD_FCS:
        return None
    at = frame.find(MAGIC)
    if at < 0 or at + 8 > len(frame) - 2:
        return None
    value: int = struct.unpack_from("!I", frame, at + 4)[0]
    return value


def read_options(argv: list[str]) -> dict[str, str]:
    """Our keys from the `file PATH` argument xl2tpd passes for `pppoptfile`."""
    options: dict[str, str] = {}
    for i, arg in enumerate(argv[:-1]):
        if arg == "file":
            for line in Path(argv[i + 1]).read_text().splitlines():
                key, _, value = line.strip().partition(" ")
                if key and not key.startswith("#"):
                    options[key] = value.strip()
    return options


def run_lac(opts: dict[str, str], log: TextIO) -> None:
    frames = int(opts["frames"])
    interval = float(opts.get("interval", "0.001"))
    go = Path(opts["go"])
    deadline = time.monotonic() + 60
    while not go.exists():  # bounded: the test creates it once the LNS side is ready
        if time.monotonic() > deadline:
            log.write("gave up waiting for the go file\n")
            return
        time.sleep(0.02)
    start = time.monotonic()
    for n in range(frames):
        os.write(1, hdlc_encode(ipv4_frame(n)))
        # absolute schedule: pacing does not drift with the cost of each write
        delay = start + (n + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    log.write(f"sent {frames} frames in {time.monotonic() - start:.3f}s\n")
    log.flush()
    Path(opts["done"]).touch()
    while True:  # keep the pty open until xl2tpd hangs up (SIGTERM/SIGHUP)
        time.sleep(1)


def run_lns(opts: dict[str, str], log: TextIO) -> None:
    results = open(opts["results"], "a", buffering=1)  # noqa: SIM115 - lives until we are killed
    Path(opts["ready"]).touch()
    buf = b""
    bad = 0
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError as exc:  # EIO when xl2tpd closes the master side
            log.write(f"read ended: {exc}\n")
            return
        if not chunk:
            return
        buf += chunk
        *frames, buf = buf.split(bytes((FLAG,)))
        for escaped in frames:
            if not escaped:
                continue
            number = frame_number(hdlc_unescape(escaped))
            if number is None:
                bad += 1
                log.write(f"bad frame #{bad}: {escaped[:40].hex()}\n")
                log.flush()
            else:
                results.write(f"{number}\n")


def main(argv: list[str]) -> int:
    opts = read_options(argv)
    log = open(opts.get("log", os.devnull), "a", buffering=1)  # noqa: SIM115
    log.write(f"pid {os.getpid()} argv {argv}\n")
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tty.setraw(0)  # as pppd does: no line discipline, no echo, bytes pass as they are
    role = opts.get("role")
    if role == "lac":
        run_lac(opts, log)
    elif role == "lns":
        run_lns(opts, log)
    else:
        log.write(f"unknown role {role!r}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
