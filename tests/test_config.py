"""Config parsing: TOML file, flags on top, one-line errors with key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vprof.daemon import config
from vprof.daemon.config import ConfigError, DaemonConfig
from vprof.model import PROBE_FAMILIES

EXAMPLE = Path(__file__).parent.parent / "deploy" / "vprof.toml"


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "vprof.toml"
    p.write_text(text)
    return str(p)


def test_defaults() -> None:
    cfg = config.load(None)
    assert cfg == DaemonConfig()
    assert cfg.listen.endswith(f":{config.DEFAULT_PORT}")
    assert cfg.families == PROBE_FAMILIES and cfg.granularity == "vm"
    assert cfg.slow_exit_threshold_ns == 1_000_000


def test_file_then_flags_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'listen = "127.0.0.1:9999"\ninterval = 2\nfamilies = ["io", "sched"]\n'
        "top_k = 7\nbpf_stats = true\nslow_exit_threshold_us = 250.5\n",
    )
    cfg = config.load(path, {"interval": 0.5, "families": "sched,io,sched", "listen": None})
    assert cfg.listen == "127.0.0.1:9999"
    assert cfg.interval == 0.5
    assert cfg.families == ("sched", "io")
    assert cfg.top_k == 7 and cfg.bpf_stats is True
    assert cfg.slow_exit_threshold_ns == 250_500


def test_the_shipped_example_is_valid() -> None:
    cfg = config.load(str(EXAMPLE))
    assert cfg.listen.endswith(f":{config.DEFAULT_PORT}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval = 5\nlisten = 9477\n", ":2: listen: must be a string"),
        ("\n\ninterval = 0\n", ":3: interval: must be between 0.1 and 3600, not 0"),
        ('interval = "5s"\n', ":1: interval: must be a number, not str"),
        ("top_k = 2.5\n", ":1: top_k: must be an integer"),
        ("top_k = true\n", ":1: top_k: must be an integer, not bool"),
        ('granularity = "thread"\n', ":1: granularity: must be one of vm, vcpu, full"),
        ('families = ["io", "exitz"]\n', ":1: families: unknown family 'exitz'"),
        ("families = []\n", ":1: families: must name at least one probe family"),
        ('bpf_stats = "yes"\n', ":1: bpf_stats: must be true or false"),
        (
            'proc_root = "/nonexistent/proc"\n',
            ":1: proc_root: '/nonexistent/proc' is not a directory",
        ),
        ('listen = "host:99999"\n', ":1: listen: port 99999 is out of range"),
        ("# comment\nport = 9100\n", ":2: unknown key 'port'"),
        ("interval = 5\ninterval = 6\n", "invalid TOML"),
        ("interval = \n", "invalid TOML"),
        ("[daemon]\ninterval = 5\n", ":1: unknown key 'daemon'"),
    ],
)
def test_bad_files_name_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert expected in message and message.startswith(path)
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(str(tmp_path / "absent.toml"))


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--top-k: must be between 1 and 1000"):
        config.load(None, {"top_k": 0})


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9477", ("127.0.0.1", 9477)),
        (":9477", ("0.0.0.0", 9477)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert config.parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9477", "::1:80", "[::g]:80", "host:", "a:b:c"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError):
        config.parse_listen(listen)


def test_source_keys_decide_a_restart() -> None:
    base = DaemonConfig()
    assert not base.source_differs(DaemonConfig(interval=1, granularity="full", top_k=2))
    assert base.source_differs(DaemonConfig(families=("io",)))
    assert base.source_differs(DaemonConfig(slow_exit_threshold_us=5))
