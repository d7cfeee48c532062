"""The daemon's HTTP side: bind the listen address, route /metrics and /healthz.

The text itself comes from the render cache (vprof/sinks/exposition.py); this
module only moves bytes, so a scrape costs a copy.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import ThreadingWSGIServer

from vprof.daemon.config import parse_listen
from vprof.sinks.exposition import Exposition
from vprof.sinks.prometheus import ExportState

log = logging.getLogger("vprof.daemon")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class StartupError(Exception):
    """A one-line reason the daemon cannot start (exit status 2)."""


class _QuietHandler(WSGIRequestHandler):
    # A client silent this long (idle connections, a stalled sender) is
    # dropped, so idle sockets cannot pile up threads; each connection has its
    # own thread, so a slow one never delays a scrape.
    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        log.debug("http: " + format, *args)


def bind(listen: str, app: Any) -> ThreadingWSGIServer:
    """A server bound to `listen` (not yet serving); StartupError if it cannot bind."""
    host, port = parse_listen(listen)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise StartupError(f"cannot listen on {listen}: {e.strerror}") from None

    class Server(ThreadingWSGIServer):
        address_family = family
        # socketserver's default backlog of 5 drops SYNs in a burst of
        # connections, and the kernel retries them after 1, 3, 7 s: a scrape
        # that arrives then waits (measured: 1,000 connections took 158 s).
        request_queue_size = 1024

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that times out or hangs up is not the daemon's error:
            # one debug line, not socketserver's traceback on stderr.
            log.debug("http: %s: %s", client_address[0], sys.exc_info()[1])

    try:
        return make_server(host, port, app, Server, handler_class=_QuietHandler)
    except OSError as e:
        raise StartupError(f"cannot listen on {listen}: {e.strerror or e}") from None


def metrics_app(exposition: Exposition, state: Callable[[], ExportState]) -> WsgiApp:
    """A WSGI app serving GET /metrics from `state()`."""

    def metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        use_gzip = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        data = exposition.body(state(), use_gzip)
        headers = [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))]
        if use_gzip:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [data]

    return metrics


def _reply(start_response: Callable[..., Any], status: str, ctype: str, data: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))])
    return [data]


def routes(metrics: WsgiApp, health: Callable[[], tuple[int, dict[str, Any]]]) -> WsgiApp:
    """/metrics, /healthz (JSON; 200 or 503) and a one-line index."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed",
                [("Allow", "GET, HEAD"), ("Content-Type", "text/plain"), ("Content-Length", "19")],
            )
            return [b"method not allowed\n"]
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            code, doc = health()
            status = "200 OK" if code == 200 else f"{code} Service Unavailable"
            body = json.dumps(doc, sort_keys=True).encode()
            return _reply(start_response, status, "application/json", body)
        if path == "/":
            index = b"vprof daemon: see /metrics and /healthz\n"
            return _reply(start_response, "200 OK", "text/plain", index)
        return _reply(start_response, "404 Not Found", "text/plain", b"not found\n")

    return app
