"""`--web.config.file`: TLS and basic authentication, as Prometheus exporters do.

The file has the exporter-toolkit's format (what node_exporter and
ebpf_exporter read), so a fleet locks vprof down with the file it already has:

    tls_server_config:
      cert_file: /etc/vprof/tls.crt
      key_file: /etc/vprof/tls.key
    basic_auth_users:
      prometheus: $2y$10$...        # bcrypt, e.g. `htpasswd -nBC 10 "" | tr -d ':'`

Either section may be absent.  Without the flag the daemon serves plain HTTP
to anyone, as exporters do by default.  Every problem is a ConfigError of one
line naming the file and the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vprof.daemon.config import ConfigError

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_TOP_KEYS = {"tls_server_config", "basic_auth_users"}
_TLS_KEYS = {"cert_file", "key_file", "min_version", "client_auth_type", "client_ca_file"}
_VERSIONS = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class WebConfig:
    cert_file: str | None = None
    key_file: str | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def _mapping(path: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key}: must be a mapping")
    return value


def _tls(path: str, tls: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(tls) - _TLS_KEYS)
    if unknown:
        raise ConfigError(f"{path}: tls_server_config: unknown key {unknown[0]!r}")
    if tls.get("client_auth_type") not in (None, "NoClientCert"):
        raise ConfigError(f"{path}: tls_server_config: client_auth_type is not supported")
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not isinstance(cert, str) or not isinstance(key, str):
        raise ConfigError(f"{path}: tls_server_config: needs cert_file and key_file")
    version = tls.get("min_version", "TLS12")
    if version not in _VERSIONS:
        raise ConfigError(f"{path}: tls_server_config: min_version must be TLS12 or TLS13")
    return {"cert_file": cert, "key_file": key, "min_version": _VERSIONS[version]}


def _users(path: str, users: dict[str, Any]) -> dict[str, bytes]:
    out = {}
    for name, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{path}: basic_auth_users: {name}: not a bcrypt hash")
        out[str(name)] = hashed.encode()
    return out


def load(path: str) -> WebConfig:
    """The validated web config at `path`; its TLS files are checked by context()."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read web config: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: invalid YAML: {first}") from None
    doc = _mapping(path, "web config", doc)
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})")
    tls = _mapping(path, "tls_server_config", doc.get("tls_server_config"))
    users = _mapping(path, "basic_auth_users", doc.get("basic_auth_users"))
    cfg = WebConfig(**(_tls(path, tls) if tls else {}), users=_users(path, users))
    if cfg.tls:
        context(cfg, path)  # a bad certificate fails at start, not at the first scrape
    return cfg


def context(cfg: WebConfig, path: str = "web config") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = cfg.min_version
    try:
        ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    except (OSError, ssl.SSLError) as e:
        why = getattr(e, "strerror", None) or getattr(e, "reason", None) or e
        raise ConfigError(f"{path}: cannot load cert_file/key_file: {why}") from None
    return ctx


def wrap_tls(server: Any, cfg: WebConfig) -> None:
    """Serve TLS on `server`'s socket.  The handshake runs in each connection's
    own thread (on its first read), never in the accept loop, so a client that
    connects and stalls delays nobody; plain HTTP fails its handshake."""
    server.socket = context(cfg).wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )


def _deny(start_response: Callable[..., Any]) -> list[bytes]:
    body = b"unauthorized\n"
    start_response(
        "401 Unauthorized",
        [
            ("WWW-Authenticate", 'Basic realm="vprof"'),
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


class BasicAuth:
    """WSGI middleware: every path needs one of `users`' passwords.

    bcrypt costs ~50-100 ms a check by design; a scraper sends the same header
    every few seconds, so headers that passed are remembered (by their SHA-256,
    bounded), as exporter-toolkit caches them."""

    CACHE = 64

    def __init__(self, app: WsgiApp, users: dict[str, bytes]) -> None:
        self._app = app
        self._users = users
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()

    def _check(self, header: str) -> bool:
        digest = hashlib.sha256(header.encode()).digest()
        with self._lock:
            if digest in self._ok:
                return True
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        hashed = self._users.get(user.decode("utf-8", "replace"))
        import bcrypt

        if hashed is None or not bcrypt.checkpw(password, hashed):
            return False
        with self._lock:
            if len(self._ok) >= self.CACHE:
                self._ok.clear()
            self._ok.add(digest)
        return True

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Basic ") or not self._check(header):
            return _deny(start_response)
        return self._app(environ, start_response)
