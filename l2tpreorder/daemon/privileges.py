"""Dropping root after binding: one way for both modes.

Relay mode keeps no capability (setuid from root to another user clears them all). In-path mode
must keep CAP_NET_ADMIN: the kernel checks it on every nfnetlink message, the verdicts included
(tried: after a plain setuid the verdicts are refused and every queued packet waits forever).
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import struct

log = logging.getLogger("l2tpreorder.daemon.privileges")

PR_SET_KEEPCAPS = 8
CAP_NET_ADMIN = 12
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_privileges(pw: pwd.struct_passwd, keep: tuple[int, ...] = ()) -> str | None:
    """Started as root: become `pw` (its group, no supplementary groups) for good, keeping only
    the capabilities in `keep` (e.g. (CAP_NET_ADMIN,)). Returns an error or None."""
    user = pw.pw_name
    if os.geteuid() != 0:
        if os.geteuid() != pw.pw_uid:
            log.warning("user = %r: not started as root, so running as uid %d", user, os.geteuid())
        return None
    kept = ", ".join("CAP_NET_ADMIN" if c == CAP_NET_ADMIN else f"capability {c}" for c in keep)
    libc = ctypes.CDLL(None, use_errno=True) if keep else None
    try:
        if libc is not None and libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        if libc is not None:
            mask = sum(1 << c for c in keep)
            header = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
            data = ctypes.create_string_buffer(struct.pack("=6I", mask, mask, 0, 0, 0, 0))
            if libc.capset(ctypes.c_char_p(header), data) != 0:
                raise OSError(ctypes.get_errno(), "capset")
            libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
    except OSError as e:
        keeping = f" keeping {kept}" if kept else ""
        reason = e.strerror or str(e)
        return f"user = {user!r}: cannot switch to it{keeping}: {reason}; not running on as root"
    try:
        os.setuid(0)
    except OSError:
        only = f", only {kept} kept" if kept else ""
        log.info("running as user %s (uid %d, gid %d)%s", user, pw.pw_uid, pw.pw_gid, only)
        return None
    return f"user = {user!r}: could switch back to root after dropping; refusing to run"
