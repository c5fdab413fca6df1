"""The `/metrics` HTTP(S) listener, on the standard library's WSGI server.

prometheus_client's own start_http_server gained TLS and a handle to stop it only in releases
newer than Debian 12's (0.16): the package depends on Debian's, so the listener is ours and
prometheus_client only provides the WSGI app (present in every release we support).
"""

from __future__ import annotations

import socket
import ssl
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

# A client that connects and then says nothing holds only its own thread, and only this long.
CLIENT_TIMEOUT = 10.0


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr (that is the journal under systemd)."""

    timeout = CLIENT_TIMEOUT

    def setup(self) -> None:
        super().setup()
        # The TLS handshake runs here, in the scrape's own thread, not in accept(): a client
        # that stalls mid-handshake must not block the listener for every other scrape.
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a slow or stuck client cannot block the next scrape."""

    daemon_threads = True


def serve_metrics(
    listen: str, port: int, registry: CollectorRegistry, cert: str | None, key: str | None
) -> tuple[WSGIServer, threading.Thread]:
    """Start serving `registry` on listen:port (TLS with cert/key) in a daemon thread.

    Raises OSError when the address cannot be bound or the cert/key cannot be read.
    """
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    server_class = type("_MetricsServer", (_ThreadingServer,), {"address_family": family})
    httpd: WSGIServer = make_server(
        listen, port, make_wsgi_app(registry), server_class=server_class,
        handler_class=_QuietHandler,
    )
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            httpd.server_close()
            raise OSError(getattr(e, "errno", None), f"TLS certificate/key: {e}") from e
        httpd.socket = context.wrap_socket(
            httpd.socket, server_side=True, do_handshake_on_connect=False
        )
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread
