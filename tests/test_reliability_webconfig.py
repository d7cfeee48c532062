"""Access control (issue 15, item 6): `--web.config.file` with TLS and basic auth.

A daemon (fake source, in this process) serves TLS with a fresh self-signed
certificate and one bcrypt user.  curl: the right credentials 200, a wrong
password or none 401, plain HTTP refused.  A real Prometheus scrapes it over
TLS with basic auth and stores the fake VM's count.  Broken web configs fail
the start with one line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from test_daemon import FakeSource, free_port, get
from test_daemon_e2e import wait_for

from vprof.daemon import config
from vprof.daemon.core import Daemon
from vprof.daemon.http import StartupError

pytestmark = [pytest.mark.reliability]

USER, PASSWORD = "prom", "s3cret pass"


def _cert(tmp: Path) -> tuple[Path, Path]:
    crt, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("web")
    crt, key = _cert(tmp)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    web = tmp / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
        f"basic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    port = free_port()
    cfg = config.load(None, {"listen": f"127.0.0.1:{port}", "web_config_file": str(web)})
    d = Daemon(cfg, FakeSource)
    d.start()
    d.tick()
    try:
        yield f"127.0.0.1:{port}", crt
    finally:
        d.shutdown()


def _curl(url: str, crt: Path, *auth: str) -> str:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
         "--cacert", str(crt), *auth, url],
        capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/"])
def test_curl_right_wrong_none_and_plain(locked: tuple[str, Path], path: str) -> None:
    addr, crt = locked
    assert _curl(f"https://{addr}{path}", crt, "-u", f"{USER}:{PASSWORD}") == "200"
    assert _curl(f"https://{addr}{path}", crt, "-u", f"{USER}:wrong") == "401"
    assert _curl(f"https://{addr}{path}", crt, "-u", f"nobody:{PASSWORD}") == "401"
    assert _curl(f"https://{addr}{path}", crt) == "401"
    assert _curl(f"http://{addr}{path}", crt, "-u", f"{USER}:{PASSWORD}") == "000"  # refused
    # Still serving after the plain-HTTP attempt.
    assert _curl(f"https://{addr}{path}", crt, "-u", f"{USER}:{PASSWORD}") == "200"


@pytest.mark.e2e
def test_prometheus_scrapes_over_tls_with_basic_auth(
    locked: tuple[str, Path], tmp_path: Path
) -> None:
    addr, crt = locked
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 900ms}\n"
        "scrape_configs:\n  - job_name: vprof\n    scheme: https\n"
        f"    tls_config: {{ca_file: {crt}}}\n"
        f"    basic_auth: {{username: {USER}, password_file: {tmp_path / 'pw'}}}\n"
        f"    static_configs: [{{targets: ['{addr}']}}]\n"
    )
    port = free_port()
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/v1/query?query="
        query = 'vprof_vm_events_total{job="vprof",bucket="io",vm="fake-vm"}'
        # The fake source's first snapshot has 10 io events: the oracle.
        body = wait_for("the count in Prometheus", lambda: _value(url + query), 40, 0.5)
        assert body == "10"
        assert _value(url + 'up{job="vprof"}') == "1"
    finally:
        prom.terminate()
        prom.wait(10)


def _value(url: str) -> str | None:
    import json

    code, body = get(url)
    result = json.loads(body)["data"]["result"] if code == 200 else []
    return str(result[0]["value"][1]) if result else None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: [1]\n", "tls_server_config: must be a mapping"),
        ("tls_server_config:\n  cert_file: /nope\n", "needs cert_file and key_file"),
        ("tls_server_config:\n  cert_file: /nope\n  key_file: /nope\n", "cannot load"),
        ("basic_auth_users:\n  a: plaintext\n", "a: not a bcrypt hash"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("basic_auth_users: {a: [\n", "invalid YAML"),
    ],
)
def test_a_broken_web_config_fails_the_start_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(text)
    cfg = config.load(None, {"listen": f"127.0.0.1:{free_port()}", "web_config_file": str(web)})
    d = Daemon(cfg, FakeSource)
    with pytest.raises(StartupError) as err:
        d.start()
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(web) in str(err.value)
    assert d.server is None  # nothing was bound
