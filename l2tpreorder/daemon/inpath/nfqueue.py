"""A small nfnetlink_queue client (AF_NETLINK, stdlib only): bind a queue, read packets, verdicts.

Why our own: in-path mode needs exactly bind + copy-packet + fail-open + verdicts (single,
batch, with a replaced payload), and libnetfilter_queue bindings are neither stdlib nor in
Debian's Python. Protocol facts (message types, attribute numbers, struct layouts) are from the
kernel's uapi headers linux/netfilter/nfnetlink.h and nfnetlink_queue.h; multi-byte fields in
nfqueue attributes are big-endian, the netlink headers host-endian.

One socket binds one queue. A packet is given a verdict by its packet id; the kernel keeps it
queued (in arrival order) until then. `NFQNL_MSG_VERDICT_BATCH` gives one verdict to every
queued packet with id <= the given one, so it is only used for a run that is exactly the head
of what is still queued (see `Verdicts`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from l2tpreorder.build import BUILD
from l2tpreorder.daemon import mmsg
from l2tpreorder.daemon.inpath.errors import NfqueueError

NETLINK_NETFILTER: Final = 12
SOL_NETLINK: Final = 270
NETLINK_NO_ENOBUFS: Final = 5
SO_RCVBUFFORCE: Final = 33

NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLA_TYPE_MASK: Final = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

NFNL_SUBSYS_QUEUE: Final = 3
NFQNL_MSG_PACKET: Final = 0
NFQNL_MSG_VERDICT: Final = 1
NFQNL_MSG_CONFIG: Final = 2
NFQNL_MSG_VERDICT_BATCH: Final = 3

NFQA_PACKET_HDR: Final = 1
NFQA_VERDICT_HDR: Final = 2
NFQA_PAYLOAD: Final = 10
NFQA_CAP_LEN: Final = 13
NFQA_SKB_INFO: Final = 14
# NFQA_SKB_INFO flags. The kernel sends the attribute unasked. CSUMNOTREADY (checksum still to
# be filled in, CHECKSUM_PARTIAL) only reaches a queue configured with NFQA_CFG_F_GSO, which we
# never set: without it the kernel completes a partial checksum before copying the packet.
# CSUM_NOTVERIFIED (PREROUTING, INPUT, FORWARD): neither the NIC nor the kernel has verified the
# checksum yet; without it the packet's checksum is known good (or was computed locally).
NFQA_SKB_CSUMNOTREADY: Final = 0x1
NFQA_SKB_GSO: Final = 0x2
NFQA_SKB_CSUM_NOTVERIFIED: Final = 0x4

NFQA_CFG_CMD: Final = 1
NFQA_CFG_PARAMS: Final = 2
NFQA_CFG_QUEUE_MAXLEN: Final = 3
NFQA_CFG_MASK: Final = 4
NFQA_CFG_FLAGS: Final = 5
NFQNL_CFG_CMD_BIND: Final = 1
NFQNL_CFG_CMD_UNBIND: Final = 2
NFQNL_COPY_PACKET: Final = 2
NFQA_CFG_F_FAIL_OPEN: Final = 0x1

NF_DROP: Final = 0
NF_ACCEPT: Final = 1

NF_INET_LOCAL_IN: Final = 1
NF_INET_FORWARD: Final = 2
NF_INET_LOCAL_OUT: Final = 3

# Largest copy that still fits one receive slot with the netlink/nfqueue headers around it; a
# bigger packet arrives truncated (NFQA_CAP_LEN) and is accepted untouched, never dropped.
MAX_COPY: Final = mmsg.SLOT_SIZE - 512
DEFAULT_QUEUE_MAXLEN: Final = 65536
DEFAULT_RCVBUF: Final = 64 * 1024 * 1024

_NLMSGHDR: Final = struct.Struct("=IHHII")
# Config requests carry this sequence number, verdicts 0: an error message answers the one
# whose number it carries (a refused verdict's error must not pass for a config answer).
_CONFIG_SEQ: Final = 1
_NFGENMSG: Final = struct.Struct("!BBH")
_NLATTR: Final = struct.Struct("=HH")
_VERDICT_HDR: Final = struct.Struct("!II")
_HDR_LEN: Final = _NLMSGHDR.size + _NFGENMSG.size  # 20


# The longest a stop waits for the kernel's ACK to "maxlen 0" and to the unbind (see
# `_request_attrs`): a lost ACK then costs a second, not the stop.
STOP_ACK_TIMEOUT: Final = 1.0


# A queued packet's flags (`Queued.flags`; 0 in the common case):
PACKET_TRUNCATED: Final = 0x1  # the copy is shorter than the packet (NFQA_CAP_LEN)
# NFQA_SKB_INFO's flags, moved up one bit
PACKET_CSUM_NOT_READY: Final = NFQA_SKB_CSUMNOTREADY << 1
PACKET_GSO: Final = NFQA_SKB_GSO << 1
PACKET_CSUM_NOT_VERIFIED: Final = NFQA_SKB_CSUM_NOTVERIFIED << 1


class Queued:
    """One packet read from the queue, until its verdict: its packet id (for the verdict), the
    netfilter hook, the copied bytes (an IP packet), PACKET_* flags, the L2TP bytes handed to
    the pipeline, and whether it was answered. The compiled parse makes these directly (a
    native object: the id and flags are machine ints, no tuple), and the in-path adapter gives
    it to the pipeline as the datagram's tag, so what comes out of `take_output()` leads
    straight back to it: one object per packet where a tuple and its boxed id, a dict entry
    keyed by the id with a tuple for the bytes, and an ordered-dict node for the queue order
    were (issue 23: objects per datagram are the worker's cost)."""

    __slots__ = ("done", "flags", "hook", "l2tp", "packet_id", "pkt")

    def __init__(
        self, packet_id: int, pkt: bytes, hook: int = NF_INET_LOCAL_IN, flags: int = 0
    ) -> None:
        self.packet_id = packet_id
        self.hook = hook
        self.pkt = pkt
        self.flags = flags
        self.l2tp = b""  # set when the pipeline is given it
        self.done = False


def _attr(kind: int, value: bytes) -> bytes:
    length = _NLATTR.size + len(value)
    return _NLATTR.pack(length, kind) + value + b"\0" * (-length & 3)


def _message(msg: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, queue) + attrs
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0)
        + body
    )


def verdict_message(
    queue: int, packet_id: int, verdict: int, payload: bytes | None = None
) -> bytes:
    """NFQNL_MSG_VERDICT for one packet; with `payload`, the packet is replaced by it."""
    attrs = _attr(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(verdict, packet_id))
    if payload is not None:
        attrs += _attr(NFQA_PAYLOAD, payload)
    return _message(NFQNL_MSG_VERDICT, queue, attrs)


def batch_verdict_message(queue: int, last_id: int, verdict: int) -> bytes:
    """NFQNL_MSG_VERDICT_BATCH: `verdict` for every queued packet with id <= last_id."""
    attrs = _attr(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(verdict, last_id))
    return _message(NFQNL_MSG_VERDICT_BATCH, queue, attrs)


_PACKET_TYPE: Final = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
_LITTLE: Final = sys.byteorder == "little"
_BE32: Final = struct.Struct("!I")
_LEN_TYPE: Final = struct.Struct("=IH")
# nlattr header (host order) + nfqnl_msg_packet_hdr (id big-endian: ntohl), hook byte
_FIRST_ATTR: Final = struct.Struct("=HHIHB")
# Compiled exactly when the build is (l2tpreorder.build): which parse `parse_queued` runs.
_NATIVE: Final = BUILD == "compiled"
_ERRNO: Final = struct.Struct("=i")


def parse_queued(
    buf: Any, at: int, end: int, out: list[Queued], errors: list[int] | None = None
) -> None:
    """Append the packets of the netlink messages in buf[at:end] to `out`, each a `Queued`; the
    errno of each error message (a refused verdict: the kernel answers errors even unasked)
    goes to `errors`. Works on bytes, a bytearray or the receive ring's mmap. The per-packet
    cost of in-path mode starts here. Compiled, the messages are read by byte index (`_parse`:
    native code, no Python object made but the Queued and its payload; the struct parse made
    seven tuples, a boxed id and a tuple per packet), after one copy to bytes of what is not
    bytes (one slot: a few hundred bytes). Interpreted, `_parse_struct`'s few struct calls cost
    less than the many subscripts (measured: 2.3 against 1.1-1.4 us per packet). Both parse
    alike: tests/daemon/test_nfqueue_parse.py."""
    if not _NATIVE:
        _parse_struct(buf, at, end, out, errors)
        return
    if type(buf) is not bytes:
        buf = bytes(buf[at:end])
        end -= at
        at = 0
    _parse(buf, at, end, out, errors)


def _host16(buf: bytes, at: int) -> int:
    """A netlink header field: host byte order."""
    if _LITTLE:
        return buf[at] | (buf[at + 1] << 8)
    return (buf[at] << 8) | buf[at + 1]


def _host32(buf: bytes, at: int) -> int:
    if _LITTLE:
        return _host16(buf, at) | (_host16(buf, at + 2) << 16)
    return (_host16(buf, at) << 16) | _host16(buf, at + 2)


def _be32(buf: bytes, at: int) -> int:
    """An nfqueue attribute's field: network byte order."""
    return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]


def _parse(buf: bytes, at: int, end: int, out: list[Queued], errors: list[int] | None) -> None:
    """`parse_queued` by byte index, on bytes: what the compiled build runs."""
    # Host-order u16 fields read inline (a call per field was 2% of the worker's time): s0 and
    # s1 shift a field's first and second byte, as `_host16` does.
    s0, s1 = (0, 8) if _LITTLE else (8, 0)
    while at + 16 <= end:
        length = _host32(buf, at)
        kind = (buf[at + 4] << s0) | (buf[at + 5] << s1)
        if length < 16 or at + length > end:
            return
        if kind == _PACKET_TYPE:
            stop = at + length
            # The kernel puts NFQA_PACKET_HDR first: id and hook without a lookup.
            a = at + _HDR_LEN
            if (
                a + 11 > stop
                or ((buf[a + 2] << s0) | (buf[a + 3] << s1)) & NLA_TYPE_MASK != NFQA_PACKET_HDR
                or ((buf[a] << s0) | (buf[a + 1] << s1)) < 11
            ):
                at += (length + 3) & ~3
                continue
            packet_id = _be32(buf, a + 4)
            hook = buf[a + 10]
            a += 12
            payload = b""
            flags = 0
            while a + 4 <= stop:
                alen = (buf[a] << s0) | (buf[a + 1] << s1)
                if alen < 4 or a + alen > stop:
                    break
                atype = ((buf[a + 2] << s0) | (buf[a + 3] << s1)) & NLA_TYPE_MASK
                if atype == NFQA_PAYLOAD:
                    payload = buf[a + 4 : a + alen]
                elif atype == NFQA_CAP_LEN:
                    flags |= PACKET_TRUNCATED
                elif atype == NFQA_SKB_INFO and alen >= 8:
                    flags |= _be32(buf, a + 4) << 1
                a += (alen + 3) & ~3
            out.append(Queued(packet_id, payload, hook, flags))
        elif kind == NLMSG_ERROR and errors is not None and length >= 20:
            code = _verdict_error(buf, at, length)
            if code:
                errors.append(code)
        at += (length + 3) & ~3


def _parse_struct(buf: Any, at: int, end: int, out: list[Queued], errors: list[int] | None) -> None:
    """`_parse` with struct calls, on bytes, a bytearray or an mmap without copying the
    message: what the interpreted build runs."""
    length: int
    kind: int
    alen: int
    atype: int
    raw_id: int
    hook: int
    hdr = _LEN_TYPE.unpack_from
    nla = _NLATTR.unpack_from
    first = _FIRST_ATTR.unpack_from
    ntohl = socket.ntohl
    while at + 16 <= end:
        length, kind = hdr(buf, at)
        if length < 16 or at + length > end:
            return
        if kind == _PACKET_TYPE:
            stop = at + length
            if at + _HDR_LEN + 11 > stop:  # no room for NFQA_PACKET_HDR: not a packet
                at += (length + 3) & ~3
                continue
            alen, atype, raw_id, _, hook = first(buf, at + _HDR_LEN)
            if atype & NLA_TYPE_MASK != NFQA_PACKET_HDR or alen < 11:
                at += (length + 3) & ~3
                continue
            a = at + _HDR_LEN + 12
            payload = b""
            flags = 0
            while a + 4 <= stop:
                alen, atype = nla(buf, a)
                if alen < 4 or a + alen > stop:
                    break
                atype &= NLA_TYPE_MASK
                if atype == NFQA_PAYLOAD:
                    payload = buf[a + 4 : a + alen]
                elif atype == NFQA_CAP_LEN:
                    flags |= PACKET_TRUNCATED
                elif atype == NFQA_SKB_INFO and alen >= 8:
                    flags |= _BE32.unpack_from(buf, a + 4)[0] << 1
                a += (alen + 3) & ~3
            out.append(Queued(ntohl(raw_id), bytes(payload), hook, flags))
        elif kind == NLMSG_ERROR and errors is not None and length >= 20:
            code = _verdict_error(buf, at, length)
            if code:
                errors.append(code)
        at += (length + 3) & ~3


def _verdict_error(buf: Any, at: int, length: int) -> int:
    """The errno of the error message at `at` answering a verdict, 0 for none. A batch
    verdict's ENOENT is none: no packet was queued up to its id (an `accept_all` at a stop with
    nothing waiting), so nothing was refused."""
    code: int = -_ERRNO.unpack_from(buf, at + _NLMSGHDR.size)[0]
    if code == errno.ENOENT and length >= 2 * _NLMSGHDR.size + 4:
        kind = _NLMSGHDR.unpack_from(buf, at + _NLMSGHDR.size + 4)[1]  # the request's header
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT_BATCH:
            return 0
    return code


class NfQueue:
    """One bound queue: `read_queued()` drains what is waiting, `send()` writes verdict messages."""

    def __init__(
        self,
        queue: int,
        *,
        copy_range: int = MAX_COPY,
        maxlen: int = DEFAULT_QUEUE_MAXLEN,
        rcvbuf: int = DEFAULT_RCVBUF,
        fail_open: bool = True,
    ) -> None:
        if not 0 <= queue <= 65535:
            raise ValueError(f"queue={queue!r}: expected 0..65535")
        self.queue = queue
        # The kernel's counters (id_sequence): by path here; a worker that drops privileges
        # gives a kept-open reader (`QueueWaiting.stats`) instead.
        self.stats: Callable[[], dict[int, QueueStats]] = read_queue_stats
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.errors: list[int] = []  # errno of refused verdicts since the caller last looked
        # Packet messages that came in while a config request waited for its ACK: the queue
        # is live from the bind on, and a packet read and dropped here would never get a
        # verdict (the kernel drops it at the unbind). `read` hands them out first.
        self._early: list[bytes] = []
        try:
            self._setup(copy_range, maxlen, rcvbuf, fail_open)
        except BaseException:
            self.sock.close()
            raise
        self._ring = mmsg.ring() if mmsg.AVAILABLE else None
        self._buf = bytearray(mmsg.SLOT_SIZE)

    def _setup(self, copy_range: int, maxlen: int, rcvbuf: int, fail_open: bool) -> None:
        s = self.sock
        s.bind((0, 0))
        # A full socket buffer must not make the kernel drop: FORCE passes rmem_max (we hold
        # CAP_NET_ADMIN), the plain option is the fallback; fail-open covers the rest.
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # ENOBUFS on overflow would only tell us what the /proc counters count anyway.
        s.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        # One message: the kernel binds, then applies copy mode, maxlen and flags before it
        # answers (nfqnl_recv_config), so the defaults hold for part of one call instead of a
        # round trip per setting. Not for none of it: the bind creates the instance with the
        # defaults (metadata only, maxlen 1024, no fail-open) and the rest is applied after in
        # the same call, so a packet queued in between reaches us without its payload (accepted
        # untouched as not UDP: never dropped, not ordered).
        params = struct.pack("!IB", min(copy_range, MAX_COPY), NFQNL_COPY_PACKET)
        attrs = (
            _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))
            + _attr(NFQA_CFG_PARAMS, params)
            + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
        )
        if fail_open:
            flag = struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)
            attrs += _attr(NFQA_CFG_FLAGS, flag) + _attr(NFQA_CFG_MASK, flag)
        self._request_attrs(attrs, "bind (copy mode, maxlen, fail-open)")

    def _request(self, kind: int, value: bytes, what: str, timeout: float | None = None) -> None:
        self._request_attrs(_attr(kind, value), what, timeout)

    def _request_attrs(self, attrs: bytes, what: str, timeout: float | None = None) -> None:
        """Send one config request with an ACK and raise if the kernel refuses it.

        `timeout` (seconds) bounds the wait for the ACK: at shutdown under overload our socket
        may be full, and the kernel then drops the ACK (netlink acks are sent without waiting),
        so an unbounded wait would hang the stop until systemd's SIGKILL."""
        self.sock.send(
            _message(NFQNL_MSG_CONFIG, self.queue, attrs, NLM_F_REQUEST | NLM_F_ACK, _CONFIG_SEQ)
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                ready = select.select([self.sock], [], [], max(0.0, left))[0] if left > 0 else []
                if not ready:
                    raise NfqueueError(
                        errno.ETIMEDOUT, f"nfqueue {self.queue} {what}: no answer in {timeout} s"
                    )
            reply = self.sock.recv(65536)
            at = 0
            while at + _NLMSGHDR.size <= len(reply):
                length, kind, _, seq = _NLMSGHDR.unpack_from(reply, at)[:4]
                if length < _NLMSGHDR.size:
                    break
                if kind == NLMSG_ERROR and seq == _CONFIG_SEQ:  # our answer (verdicts: seq 0)
                    code = -_ERRNO.unpack_from(reply, at + _NLMSGHDR.size)[0]
                    if code:
                        raise NfqueueError(
                            code, f"nfqueue {self.queue} {what}: {os.strerror(code)}"
                        )
                    return
                if kind != NLMSG_ERROR:  # a queued packet: read() hands it out
                    self._early.append(reply[at : at + length])
                else:  # a refused verdict's error
                    code = _verdict_error(reply, at, length)
                    if code:
                        self.errors.append(code)
                at += (length + 3) & ~3

    @property
    def has_early(self) -> bool:
        """Packets were read while a config request waited: `read_queued()` before the next
        poll."""
        return bool(self._early)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_queued(self, limit: int = 64) -> list[Queued]:
        """Up to `limit` netlink messages now waiting, parsed (empty when none): what the
        worker hands the adapter."""
        ring = self._ring
        packets: list[Queued] = []
        if self._early:  # read while a config request waited: older than what waits now
            early, self._early = self._early, []
            for message in early:
                parse_queued(message, 0, len(message), packets, self.errors)
            return packets
        if ring is not None:
            n = ring.recv(self.sock.fileno(), min(limit, ring.slots))
            if n:
                lengths = ring.lengths(n)
                mem = ring.mem
                offsets = ring.offsets
                errors = self.errors
                for i in range(n):
                    at = offsets[i]
                    parse_queued(mem, at, at + lengths[2 * i + 1], packets, errors)
            return packets
        for _ in range(limit):
            try:
                n = self.sock.recv_into(self._buf, 0, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            parse_queued(self._buf, 0, n, packets, self.errors)
        return packets

    def send(self, messages: list[bytes]) -> None:
        """Write verdict messages; several go in one datagram (the kernel walks them all)."""
        chunk: list[bytes] = []
        size = 0
        for m in messages:
            if chunk and size + len(m) > 200_000:
                self._send(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(m)
            size += len(m)
        if chunk:
            self._send(b"".join(chunk))

    def _send(self, data: bytes) -> None:
        while True:
            try:
                self.sock.send(data)
                return
            except InterruptedError:
                continue
            except OSError as e:
                # A verdict for a packet the kernel already let go (flushed at unbind) is
                # ENOENT in an ACK we never asked for; anything else is a real fault.
                if e.errno == errno.ENOENT:
                    return
                raise

    def set_maxlen(self, maxlen: int) -> int | None:
        """Set the queue's maxlen now (a fail-open episode: room for the packets after it);
        returns the kernel's id_sequence afterwards (every packet queued later has a higher
        id), None when /proc does not say. No ACK is asked: the kernel applies a config
        message within our send, and a refusal comes back as an error message that `read`
        collects in `errors` (so a wait here cannot swallow queued packets)."""
        attrs = _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
        try:
            self._send(_message(NFQNL_MSG_CONFIG, self.queue, attrs))
        except OSError as e:  # never lose the worker over it: the maxlen simply stays
            self.errors.append(e.errno or errno.EIO)
        stats = self.stats().get(self.queue)
        return None if stats is None else stats.id_sequence

    def stop_queueing(self) -> bool:
        """Queue maxlen 0: from now on every new packet finds the queue full and, with
        fail-open, passes at once instead of being queued. What is queued already stays for
        its verdict. Tried here (Linux 6.18): the kernel takes 0 and bypasses every packet.
        So a packet arriving between `accept_all` and the unbind is not dropped by the unbind
        (issue 21). False when the kernel refused (then the old order is all there is)."""
        try:
            self._request(
                NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 0), "queue maxlen 0", STOP_ACK_TIMEOUT
            )
        except OSError:
            return False
        return True

    def accept_all(self, last_seen_id: int | None) -> None:
        """NF_ACCEPT, unordered, for every packet still queued, read or not.

        Why: unbinding drops (NF_DROP) whatever is still queued, and at shutdown under load
        that is every packet not yet read. A batch verdict covers all queued ids up to the one
        given, compared modulo 2^32 within half the id space: `last_seen_id` + 2^30 reaches
        every packet queued after the last one read. Without one, the kernel's id counter
        from /proc stands in."""
        if last_seen_id is None:
            stats = self.stats().get(self.queue)
            last_seen_id = stats.id_sequence if stats is not None else 0
        self.send(
            [batch_verdict_message(self.queue, (last_seen_id + (1 << 30)) & 0xFFFFFFFF, NF_ACCEPT)]
        )

    def close(self) -> None:
        """Unbind (from then on the rule's bypass passes packets) and close."""
        with contextlib.suppress(OSError):
            unbind = struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, 0)
            self._request(NFQA_CFG_CMD, unbind, "unbind", STOP_ACK_TIMEOUT)
        self.sock.close()


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue (the kernel's per-queue counters)."""

    queue: int
    portid: int
    waiting: int
    copy_mode: int
    copy_range: int
    queue_dropped: int  # queue full, no fail-open
    user_dropped: int  # netlink socket full (ENOBUFS on send to us)
    id_sequence: int


PROC_PATH = "/proc/net/netfilter/nfnetlink_queue"


class QueueWaiting:
    """The kernel's count of one queue's packets awaiting a verdict (`QueueStats.waiting`),
    read through one descriptor kept open: a `pread` at offset 0 makes the seq file anew, ~3 us
    against ~25 us for opening, reading and parsing the file as `read_queue_stats` does. The
    episode check asks on every full read once the queue is half full, i.e. exactly when the
    worker has no time to spare, so the probe must not get dearer there."""

    __slots__ = ("fd", "key", "path", "queue")

    def __init__(self, queue: int, path: str = PROC_PATH) -> None:
        self.queue = queue
        self.path = path
        self.key = str(queue).encode()
        self.fd = -1

    def __call__(self) -> int | None:
        """The count; None when the file is unreadable or does not list the queue."""
        data = self._read()
        if data is None:
            return None
        key = self.key
        for line in data.split(b"\n"):
            fields = line.split(None, 3)
            if len(fields) > 2 and fields[0] == key:
                return int(fields[2])
        return None

    def stats(self) -> dict[int, QueueStats]:
        """Every queue's counters, as `read_queue_stats`, through the same descriptor: the
        file is root's alone (0440), so a worker that dropped privileges (`user`) reads it
        only so (its metrics, status, and the id_sequence an episode's boundary needs)."""
        data = self._read()
        return {} if data is None else parse_queue_stats(data.decode("ascii", "replace"))

    def _read(self) -> bytes | None:
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        try:
            data = os.pread(self.fd, _PROC_READ, 0)
            while len(data) % _PROC_READ == 0 and data:  # a long file (~1,000 queues): all of
                more = os.pread(self.fd, _PROC_READ, len(data))  # it, through this descriptor
                if not more:
                    break
                data += more
        except OSError:
            return None
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_PROC_READ: Final = 1 << 16  # bytes of the /proc file read at once (~60 per bound queue)


def read_queue_stats(path: str = PROC_PATH) -> dict[int, QueueStats]:
    """The kernel's counters per queue bound in this network namespace ({} when unreadable).

    The kernel gives a packet an id only once it is queued; a packet let through by fail-open
    (queue full, or our socket full) gets no id and is counted nowhere, so these counters show
    drops (which fail-open prevents) and the backlog, not the fail-open passes."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return {}
    return parse_queue_stats(text)


def parse_queue_stats(text: str) -> dict[int, QueueStats]:
    """The /proc file's lines, per queue (lines that are not 8 numbers are skipped)."""
    stats: dict[int, QueueStats] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            values = [int(x) for x in fields[:8]]
        except ValueError:
            continue
        stats[values[0]] = QueueStats(*values)
    return stats
