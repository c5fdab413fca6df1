"""Where a capture comes from: a file as it is, or standard input ("-") and gzip'd captures
(found by gzip's magic bytes, not the name), copied into an anonymous temporary file first.

The readers in `capture` seek and check each record's length against the file's size before
reading it (so a corrupt length is never allocated); a pipe or a gzip stream has neither.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import zlib
from typing import BinaryIO, cast


class UnreadableInput(ValueError):
    """Nothing to read: stdin is a terminal, or the gzip stream is not one."""


STDIN = "-"  # the capture path that means "read it from standard input"
GZIP_MAGIC = b"\x1f\x8b"


def _spool(src: io.BufferedReader, name: str) -> tuple[BinaryIO, str | None]:
    """`src` (gunzipped when it starts with gzip's magic bytes, whatever its name) copied into
    an anonymous temporary file, deleted when closed: the readers seek and check lengths
    against the file's size, which a pipe or a gzip stream does not have. Memory stays bounded
    (the copy goes through a small buffer); the disk needs the decompressed capture's size.
    Returns the file and, when the gzip stream stops early or is corrupt, why (what came before
    it is kept: a capture still being written is cut off like that)."""
    head = src.peek(2)[:2]
    out = tempfile.TemporaryFile(prefix="l2tpreorder-capture-")  # noqa: SIM115 - returned
    out.raw.name = name  # type: ignore[attr-defined]  # the readers' messages name the capture
    problem = None
    try:
        if head == GZIP_MAGIC:
            problem = _gunzip(src, out)
            if problem and not out.tell():
                raise UnreadableInput(f"{name}: not a readable gzip file ({problem})")
            if problem:
                problem = f"its gzip stream {problem} after {out.tell():,} bytes"
        else:
            shutil.copyfileobj(src, out, 1 << 20)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out, problem


def _gunzip(src: io.BufferedReader, out: BinaryIO) -> str | None:
    """Decompress every gzip member of `src` into `out`; why it stopped early, else None. By
    hand, not with GzipFile: that gives back nothing of a stream that is cut off."""
    chunk_size = 1 << 16
    d = zlib.decompressobj(wbits=31)
    try:
        while chunk := src.read(chunk_size):
            while chunk:
                if d.eof:  # the next member (`cat a.gz b.gz`)
                    d = zlib.decompressobj(wbits=31)
                out.write(d.decompress(chunk))
                chunk = d.unused_data if d.eof else b""
        out.write(d.flush())
    except zlib.error as e:
        return f"is corrupt ({e})"
    return None if d.eof else "ends early (cut off)"


def open_capture(path: str | os.PathLike[str]) -> tuple[BinaryIO, str | None]:
    """The capture at `path` ("-": standard input) as a seekable file, and why a gzip'd one
    stopped early (else None). A plain file is opened as it is; stdin and gzip are spooled."""
    if os.fspath(path) == STDIN:
        if sys.stdin is None or sys.stdin.isatty():
            raise UnreadableInput(
                "capture '-' means standard input, which is a terminal: pipe a capture in "
                "(tcpdump -w - ... | l2tpreorder replay pcap -) or name a file"
            )
        return _spool(cast(io.BufferedReader, sys.stdin.buffer), "<stdin>")
    f = open(path, "rb")  # noqa: SIM115 - returned open, closed by the caller
    if f.peek(2)[:2] != GZIP_MAGIC:
        return f, None
    with f:
        return _spool(f, os.fspath(path))
