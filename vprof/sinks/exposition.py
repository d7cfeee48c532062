"""Serve /metrics: the snapshot rendered once per interval, daemon state per scrape.

Formatting ~20,000 series through prometheus_client costs ~100 ms of Python
at 500 VMs, but the snapshot only changes once per interval.  So the text of
the snapshot's families is rendered once per (snapshot, options) pair, right
after the daemon publishes it (and gzipped once), and every scrape appends it
to the few daemon-state families rendered fresh.  Two Prometheus replicas
scraping the same host cost one rendering.  The output is exactly what
generate_latest() gives for SnapshotCollector, in text format 0.0.4.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from vprof.config import parse_listen
from vprof.model import Snapshot
from vprof.sinks.prometheus import ExportOptions, ExportState, daemon_families, snapshot_families

log = logging.getLogger("vprof.daemon")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class StartupError(Exception):
    """A one-line reason the daemon cannot start (exit status 2)."""


class _QuietHandler(WSGIRequestHandler):
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

    try:
        return make_server(host, port, app, Server, handler_class=_QuietHandler)
    except OSError as e:
        raise StartupError(f"cannot listen on {listen}: {e.strerror or e}") from None


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render(families: Iterable[Metric]) -> bytes:
    return generate_latest(_Families(families))


class Exposition:
    """The cached text (and gzip) of the latest snapshot's families."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Snapshot, ExportOptions] | None = None
        self._text = b""
        self._gzip = b""

    def prerender(self, state: ExportState) -> tuple[bytes, bytes]:
        """(text, gzip) of `state`'s snapshot families, rendered at most once each."""
        if state.snapshot is None:
            return b"", b""
        key = (state.snapshot, state.options)
        with self._lock:
            # Identity, not equality: comparing two 500-VM snapshots costs more than a render.
            if self._key is None or self._key[0] is not key[0] or self._key[1] != key[1]:
                self._text = render(snapshot_families(state.snapshot, state.options))
                self._gzip = gzip.compress(self._text, compresslevel=1)
                self._key = key
            return self._text, self._gzip

    def body(self, state: ExportState, use_gzip: bool) -> bytes:
        head = render(daemon_families(state))
        text, gz = self.prerender(state)
        if use_gzip:
            # A gzip stream of several members is one valid gzip body (RFC 1952).
            return gzip.compress(head, compresslevel=1) + gz
        return head + text

    def app(self, state: Callable[[], ExportState]) -> WsgiApp:
        """A WSGI app serving GET /metrics from `state()`."""

        def metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            use_gzip = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
            data = self.body(state(), use_gzip)
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
