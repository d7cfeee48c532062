"""Fleet deployment files: Kubernetes manifests, the container image definition,
its entrypoint's kernel-headers strategies, and the fleet Prometheus config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import unavailable

from vprof.daemon import config as vconfig

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/k8s"
CONTAINERFILE = ROOT / "deploy/Containerfile"
ENTRYPOINT = ROOT / "deploy/vprof-entrypoint.sh"
FLEET = ROOT / "deploy/prometheus-fleet.yml"

# Each one is justified in deploy/k8s/daemonset.yaml's header.
CAPABILITIES = {"BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE", "DAC_READ_SEARCH"}


def _docs() -> dict[str, dict[str, Any]]:
    """Every manifest in deploy/k8s, keyed by kind."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                assert doc["kind"] not in out, f"two {doc['kind']} manifests"
                out[doc["kind"]] = doc
    return out


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _docs()["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    containers = _pod()["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_manifests_parse_and_cover_the_pieces() -> None:
    docs = _docs()
    expected = {"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Service"}
    assert expected | {"ServiceMonitor"} <= set(docs)
    for kind in expected - {"Namespace"}:
        assert docs[kind]["metadata"]["namespace"] == "vprof", kind
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")


def test_daemonset_uses_host_pid_and_no_privileged_mode() -> None:
    pod, container = _pod(), _container()
    assert pod["hostPID"] is True
    assert pod.get("hostNetwork", False) is False
    security = container["securityContext"]
    assert security.get("privileged", False) is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True


def test_daemonset_adds_only_the_needed_capabilities() -> None:
    caps = _container()["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert set(caps["add"]) == CAPABILITIES
    header = (K8S / "daemonset.yaml").read_text().split("apiVersion")[0]
    for cap in CAPABILITIES:
        assert re.search(rf"#\s+{cap}\s+\S", header), f"{cap} is not justified in the header"


def test_daemonset_mounts_host_dirs_read_only() -> None:
    pod, container = _pod(), _container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    wanted = {
        "/sys/kernel/tracing": "/sys/kernel/tracing",
        "/sys/kernel/debug": "/sys/kernel/debug",
        "/host/proc": "/proc",
    }
    for mount_path, host_path in wanted.items():
        mount = mounts[mount_path]
        assert mount.get("readOnly") is True, mount_path
        assert volumes[mount["name"]]["hostPath"]["path"] == host_path
    for mount in container["volumeMounts"]:
        if "hostPath" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, f"{mount['mountPath']} is writable"


def test_daemonset_probes_hit_healthz_on_the_daemon_port() -> None:
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == vconfig.DEFAULT_PORT
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert get["port"] in ("metrics", vconfig.DEFAULT_PORT), probe
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_daemonset_runs_the_daemon_with_the_configmap(tmp_path: Path) -> None:
    container, docs = _container(), _docs()
    args = container["args"]
    assert args[:2] == ["vprof", "daemon"]
    config_path = Path(args[args.index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in _pod()["volumes"] if v["name"] == mount["name"])
    configmap = docs["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    text = configmap["data"][config_path.name]
    # The file names /host/proc, which exists only in the pod: validate the rest.
    assert 'proc_root = "/host/proc"' in text
    local = tmp_path / "vprof.toml"
    local.write_text(text.replace('"/host/proc"', '"/proc"'))
    settings = vconfig.load_file(str(local))
    assert vconfig.parse_listen(settings["listen"])[1] == vconfig.DEFAULT_PORT


def test_service_and_servicemonitor_select_the_pods() -> None:
    docs = _docs()
    pod_labels = docs["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    service = docs["Service"]
    for key, value in service["spec"]["selector"].items():
        assert pod_labels[key] == value
    (port,) = service["spec"]["ports"]
    assert port["port"] == vconfig.DEFAULT_PORT and port["targetPort"] == "metrics"
    monitor = docs["ServiceMonitor"]
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][key] == value
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    # The alert rules key on job="vprof": the Operator names the job after the Service.
    assert service["metadata"]["name"] == "vprof"


def test_containerfile_installs_bcc_and_runs_the_daemon() -> None:
    text = CONTAINERFILE.read_text()
    assert re.search(r"apt-get install[^\n]*\\?\n?[^\n]*python3-bpfcc", text)
    assert "linux-headers-amd64" in text
    assert "--system-site-packages" in text  # bcc imports only through Debian's python3
    assert re.search(r"^COPY probes ", text, re.M), "probes/*.bpf.c must ship beside vprof/"
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/vprof-entrypoint"\]', text, re.M)
    assert re.search(r'^CMD \["vprof", "daemon"\]', text, re.M)
    assert re.search(rf"^EXPOSE {vconfig.DEFAULT_PORT}$", text, re.M)
    assert "COPY deploy/vprof-entrypoint.sh /usr/local/bin/vprof-entrypoint" in text
    for strategy in ("1. host", "2. kheaders", "3. bundled"):
        assert strategy in text, f"headers strategy {strategy!r} is not documented"


# --- the entrypoint's kernel-headers strategies -----------------------------

KREL = "6.1.0-99-amd64"


def _entrypoint(
    tmp: Path, *command: str, headers: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "VPROF_KREL": KREL,
        "VPROF_HOST_ROOT": str(tmp / "host"),
        "VPROF_MODULES": str(tmp / "modules"),
        "VPROF_BUNDLED": str(tmp / "image-src"),
        "VPROF_KHEADERS": str(tmp / "kheaders.tar.xz"),
    }
    if headers is not None:
        env["VPROF_HEADERS"] = headers
    cmd = ["sh", str(ENTRYPOINT), *(command or ("true",))]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


def _headers(path: Path) -> Path:
    (path / "include/linux").mkdir(parents=True)
    (path / "include/linux/kconfig.h").write_text("/* fake */\n")
    return path


def _host_headers(tmp: Path) -> None:
    # As on a Debian host: build -> /usr/src/...-amd64, source -> ...-common.
    modules = tmp / "host/lib/modules" / KREL
    modules.mkdir(parents=True)
    (tmp / f"host/usr/src/linux-headers-{KREL}").mkdir(parents=True)
    _headers(tmp / "host/usr/src/linux-headers-6.1.0-99-common")
    (modules / "build").symlink_to(f"/usr/src/linux-headers-{KREL}")
    (modules / "source").symlink_to("/usr/src/linux-headers-6.1.0-99-common")


def _bundled(tmp: Path) -> None:
    (tmp / "image-src/linux-headers-6.1.0-56-amd64").mkdir(parents=True)
    _headers(tmp / "image-src/linux-headers-6.1.0-56-common")


def _link(tmp: Path, name: str) -> str:
    return os.readlink(tmp / "modules" / KREL / name)


def test_entrypoint_prefers_the_hosts_headers(tmp_path: Path) -> None:
    _host_headers(tmp_path)
    _bundled(tmp_path)
    done = _entrypoint(tmp_path)
    assert done.returncode == 0, done.stderr
    assert _link(tmp_path, "build") == str(tmp_path / f"host/usr/src/linux-headers-{KREL}")
    assert _link(tmp_path, "source").endswith("host/usr/src/linux-headers-6.1.0-99-common")
    assert "host" in done.stderr


def test_entrypoint_leaves_kheaders_to_bcc(tmp_path: Path) -> None:
    (tmp_path / "kheaders.tar.xz").write_bytes(b"")
    _bundled(tmp_path)
    done = _entrypoint(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "modules" / KREL / "build").exists()
    assert "kheaders" in done.stderr


def test_entrypoint_falls_back_to_bundled_headers(tmp_path: Path) -> None:
    _bundled(tmp_path)
    done = _entrypoint(tmp_path)
    assert done.returncode == 0, done.stderr
    assert _link(tmp_path, "build").endswith("image-src/linux-headers-6.1.0-56-amd64")
    assert _link(tmp_path, "source").endswith("image-src/linux-headers-6.1.0-56-common")


def test_entrypoint_forced_strategy_and_exec(tmp_path: Path) -> None:
    _host_headers(tmp_path)
    _bundled(tmp_path)
    done = _entrypoint(tmp_path, "sh", "-c", "echo ran $0", "daemon", headers="bundled")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran daemon\n"
    assert "image-src" in _link(tmp_path, "build")


@pytest.mark.parametrize("headers", [None, "host", "kheaders", "bundled", "bogus"])
def test_entrypoint_without_headers_fails_in_one_line(tmp_path: Path, headers: str | None) -> None:
    done = _entrypoint(tmp_path, headers=headers)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("vprof-entrypoint: ")


# --- the fleet Prometheus config --------------------------------------------


def _promtool_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        unavailable("promtool is not installed (run `make setup`)")
    return subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )


def test_fleet_config_passes_promtool_with_the_alert_rules() -> None:
    done = _promtool_check_config(FLEET)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
    config = yaml.safe_load(FLEET.read_text())
    assert [j["job_name"] for j in config["scrape_configs"]] == ["vprof"]
    (remote,) = config["remote_write"]
    assert remote["url"].startswith("https://")


def test_fleet_federation_example_passes_promtool(tmp_path: Path) -> None:
    text = FLEET.read_text().split("# --- B. federation")[1]
    lines = [line[2:] for line in text.splitlines()[2:] if line.startswith("# ")]
    federation = tmp_path / "global.yml"
    federation.write_text("\n".join(lines) + "\n")
    done = _promtool_check_config(federation)
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = yaml.safe_load(federation.read_text())["scrape_configs"]
    assert job["metrics_path"] == "/federate" and job["honor_labels"] is True
    assert job["params"]["match[]"] == ['{job="vprof"}']


def test_make_help_lists_every_target_and_phony_names_only_targets() -> None:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_-]+):(?!=)", text, re.MULTILINE))
    described = set(re.findall(r"^([A-Za-z0-9_-]+):.*## ", text, re.MULTILINE))
    assert targets == described, f"targets without a `## ` help text: {targets - described}"
    phony = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert phony is not None
    assert set(phony.group(1).split()) == targets
    for step in ("bench/overhead.py", "bench/scrape.py", "bench/guest_rates.py"):
        assert step in text.split("\nbench:", 1)[1].split("\n\n", 1)[0], step
