"""Start-up checks of relay mode: enough file descriptors for its peers' sockets, and a
warning when it listens openly and lets every source in."""

from __future__ import annotations

import ipaddress
import logging
import resource

from l2tpreorder.config import Config, format_address

log = logging.getLogger("l2tpreorder")


def raise_fd_limit(max_peers: int) -> None:
    """Each LAC peer holds a socket: lift the soft open-file limit towards the hard one.

    Under systemd, LimitNOFILE= does this (and the system call filter refuses setrlimit);
    from a shell the soft limit is often 1024.
    """
    want = max_peers + 256
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            if new > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (OSError, ValueError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning(
            "open-file limit %d is below max_peers + 256 = %d: new LAC peers beyond it are "
            "refused (reason peer_limit); raise LimitNOFILE / ulimit -n",
            soft,
            want,
        )


def warn_if_open(config: Config) -> None:
    """At start and after each reload: a public listen address with `allow` open to all."""
    if not config.allows_everything:
        return
    for host, port in config.listen:
        ip = ipaddress.ip_address(host)  # validated by config: an IP literal
        if ip.is_unspecified or ip.is_global:
            log.warning(
                "listening on %s and `relay.allow` accepts every source: anyone who can "
                "reach it can talk to the LNS through the relay; list your LAC prefixes in "
                "relay.allow",
                format_address((host, port)),
            )
