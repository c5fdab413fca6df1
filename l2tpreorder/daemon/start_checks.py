"""The checks every process that serves the daemon's endpoints makes before it serves (issue 24).

Written once for the one-process service (relay, a single in-path queue) and the in-path
supervisor (several queues), so the two refuse the same starts with the same lines and codes:
another daemon answering on the control socket is a config fault (EX_CONFIG: systemd must not
retry), and `metrics:` asked for but not served would let Prometheus scrape whatever holds the
port, so it is a failed start like a socket that cannot be bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from l2tpreorder.config import EX_CONFIG, Config
from l2tpreorder.daemon.control import another_daemon, answering_daemon
from l2tpreorder.daemon.metrics import listen_failure
from l2tpreorder.daemon.metrics_endpoint import MetricsEndpoint
from l2tpreorder.daemon.mode import BindError

log = logging.getLogger("l2tpreorder")


def _nothing_to_bind() -> None:
    """The supervisor binds no queue itself: its workers do."""


def refuse_start(
    config: Config,
    metrics: MetricsEndpoint,
    *,
    check_control: bool = True,
    bind: Callable[[], None] = _nothing_to_bind,
) -> int | None:
    """None when this process may serve: no daemon answers on its control socket (when it
    serves the configured one: `check_control`), `bind` succeeded and `metrics` listens.
    Else the exit code, the reason logged as one line; the caller closes what `bind` opened."""
    if check_control:
        running = answering_daemon(config.control_socket)
        if running is not None:  # before binding anything of the running one's
            log.error("%s", another_daemon(running))
            return EX_CONFIG
    try:
        bind()
        metrics.start(config.metrics)
    except BindError as e:
        log.error("%s", e)
        return 1
    except OSError as e:
        log.error("%s; not starting", listen_failure(config.metrics, e))
        return 1
    return None


def no_control_socket(error: OSError) -> None:
    """The control socket could not be served: the daemon still runs (and says what fails)."""
    log.error(
        "control socket: %s; running without it (status and reload by command fail, "
        "SIGHUP still reloads)",
        error.strerror or error,
    )
