"""Broken configs on SIGHUP (issue 15, item 4): the running config stays.

A daemon (fake source, this process) is reloaded with a file that vanished,
invalid TOML, an unknown key, out-of-range values and hostile bytes.  Each
reload is refused with one log line naming the file, counted in
vprof_config_reloads_total{result="error"}, and scrapes go on unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_daemon import fake_daemon, get

pytestmark = [pytest.mark.reliability]

BAD = [
    (None, "cannot read config file"),
    ("interval = [\n", "invalid TOML"),
    ("intervall = 5\n", "unknown key 'intervall'"),
    ("interval = 0\n", "interval: must be between"),
    ("top_k = 100000\n", "top_k: must be between"),
    ("dead_vm_grace_seconds = -1\n", "dead_vm_grace_seconds: must be between"),
    ('families = ["io\\u001b[31m"]\n', "unknown family"),
    ('log_level = "\\u0000"\n', "log_level: must be one of"),
    ("\xff\xfe = 1\n", "invalid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_reload_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str | None, message: str
) -> None:
    with fake_daemon(tmp_path) as (d, conf):
        d.tick()
        assert d.server is not None
        host, port = d.server.server_address[:2]
        before = d.cfg
        if text is None:
            conf.unlink()  # the file vanished before the SIGHUP
        else:
            conf.write_bytes(text.encode("utf-8", "surrogateescape"))
        with caplog.at_level(logging.ERROR, logger="vprof"):
            d.reload()
        assert d.cfg == before
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "\n" not in errors[0], errors
        assert message in errors[0] and str(conf) in errors[0], errors[0]
        code, text_out = get(f"http://{host}:{port}/metrics")
        assert code == 200 and 'vprof_config_reloads_total{result="error"} 1.0' in text_out
        assert 'vm="fake-vm"' in text_out
