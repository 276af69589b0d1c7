"""scripts/install.sh into a throw-away root, and the systemd unit through ``systemd-analyze verify``."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from callguard.config import AgiConfig, ServiceConfig, load_config
from callguard.errors import EXIT_CONFIG, EXIT_STALLED, NO_RESTART
from callguard.sdnotify import PINGS_PER_PERIOD

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "scripts" / "callguard.service"
INSTALL = ROOT / "scripts" / "install.sh"
SHIPPED_EXEC = "/opt/callguard/venv/bin/callguard"


def tree_hash(root: Path) -> str:
    """Paths, modes, contents and mtimes: a no-op run must leave all four alone."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(root)}|{st.st_mode:o}|{st.st_mtime_ns}".encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def install(root: Path, script: Path = INSTALL, **env: str) -> str:
    run_env = {**os.environ, "DESTDIR": str(root), **env}
    proc = subprocess.run(["bash", str(script)], env=run_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


# --- the unit -------------------------------------------------------------------------------------


def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not Path(analyze).exists():
        pytest.skip("systemd-analyze is not installed (.ci/run installs Debian's systemd package)")
    # The shipped ExecStart exists only on an installed host; point a copy at an executable that exists.
    exe = Path(sys.executable).parent / "callguard"
    target = str(exe) if exe.exists() else sys.executable
    assert SHIPPED_EXEC in text
    unit = tmp_path / "callguard.service"
    unit.write_text(text.replace(SHIPPED_EXEC, target))
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    proc = _verify(tmp_path, UNIT.read_text())
    complaints = [line for line in proc.stderr.splitlines() if "callguard.service" in line]
    assert proc.returncode == 0 and complaints == [], proc.stderr


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes").replace(
        "ProtectHome=yes", "ProtectHome=yes\nProtectEverything=yes"
    )
    proc = _verify(tmp_path, broken)
    assert "restart specifier" in proc.stderr and "ProtectEverything" in proc.stderr


def test_unit_contract() -> None:
    s = unit_settings()
    assert s["ExecStart"] == [f"{SHIPPED_EXEC} --config /etc/callguard/config.toml run"]
    assert s["RestartPreventExitStatus"] == [" ".join(map(str, NO_RESTART))] and EXIT_CONFIG in NO_RESTART
    assert s["Restart"] == ["on-failure"]
    assert s["DynamicUser"] == ["yes"] and s["StateDirectory"] == ["callguard"]
    assert s["EnvironmentFile"] == ["-/etc/callguard/callguard.env"]
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    for key in ("ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups"):
        assert s[key] in (["yes"], ["strict"]), key
    # The PBX boundary: a frozen service is killed and its sockets closed within 3 s of the freeze.
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    watchdog_s, abort_s = _seconds(s["WatchdogSec"][0]), _seconds(s["TimeoutAbortSec"][0])
    assert "WatchdogSignal" not in s  # SIGABRT to the main process, then SIGKILL to all (KillMode=mixed)
    assert s["KillMode"] == ["mixed"]
    slack = 0.25  # sd-event's default timer accuracy, on the watchdog timer and on the abort timer
    assert watchdog_s + abort_s + 2 * slack <= 2.5
    # callguard's own (logged, counted) acts first: systemd's comes no sooner than WatchdogSec less a ping
    assert watchdog_s * (1 - 1 / PINGS_PER_PERIOD) > ServiceConfig().stall_timeout + 0.15
    assert str(EXIT_STALLED) not in s["RestartPreventExitStatus"][0].split()
    m = re.fullmatch(r"(\d+)s", s["TimeoutStopSec"][0])
    assert m and int(m.group(1)) > AgiConfig().drain_seconds + 10  # drain + outbox/sync stop bounds


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", value)
    assert m, value
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "callguard.service"
    unit.write_text(UNIT.read_text())
    proc = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                          timeout=60)
    m = re.search(r"Overall exposure level for callguard\.service: ([\d.]+)", proc.stdout)
    if proc.returncode not in (0, 1) or m is None:
        pytest.skip(f"this systemd-analyze cannot score a unit offline: {proc.stderr.strip()[:120]}")
    assert float(m.group(1)) <= 2.0, proc.stdout


# --- install.sh -----------------------------------------------------------------------------------


def test_install_twice_into_a_temp_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ast = root / "etc" / "asterisk"
    ast.mkdir(parents=True)
    (ast / "extensions.conf").write_text("[general]\n; the admin's own dialplan\n")
    before_ext = (ast / "extensions.conf").stat().st_mtime_ns

    out = install(root, CALLGUARD_SKIP_VENV="1")
    assert "#include extensions_callguard.conf" in out and "#include manager_callguard.conf" in out
    unit = root / "etc" / "systemd" / "system" / "callguard.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert (root / "opt" / "callguard" / "docs" / "admin.md").read_bytes() == (ROOT / "docs" / "admin.md").read_bytes()
    for name in ("extensions_callguard.conf", "manager_callguard.conf", "queues_callguard.conf.example"):
        assert (ast / name).read_bytes() == (ROOT / "dialplan" / name).read_bytes()
    assert (ast / "extensions.conf").read_text() == "[general]\n; the admin's own dialplan\n"
    assert (ast / "extensions.conf").stat().st_mtime_ns == before_ext
    env = root / "etc" / "callguard" / "callguard.env"
    assert oct(env.stat().st_mode & 0o777) == "0o600" and "CALLGUARD_AMI_SECRET" in env.read_text()
    conf = root / "etc" / "callguard" / "config.toml"
    cfg = load_config(conf, env={})
    assert cfg.store.path == Path("/var/lib/callguard/callguard.sqlite3")
    # Apart from store.path, the installed config is the shipped one.
    shipped = (ROOT / "config.toml").read_text().splitlines()
    installed = conf.read_text().splitlines()
    assert [(a, b) for a, b in zip(shipped, installed, strict=True) if a != b] == [
        ('path = "callguard.sqlite3"', 'path = "/var/lib/callguard/callguard.sqlite3"')
    ]

    first = tree_hash(root)
    out = install(root, CALLGUARD_SKIP_VENV="1")
    assert tree_hash(root) == first
    assert "wrote" not in out and "kept existing" in out


def test_existing_config_is_untouched_and_an_old_unit_is_updated(tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = root / "etc" / "callguard" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('[store]\npath = "/srv/mine.sqlite3"\n')
    os.chmod(conf, 0o640)
    stamp = conf.stat().st_mtime_ns
    unit = root / "etc" / "systemd" / "system" / "callguard.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/old\n")

    out = install(root, CALLGUARD_SKIP_VENV="1")
    assert conf.read_text() == '[store]\npath = "/srv/mine.sqlite3"\n'
    assert conf.stat().st_mtime_ns == stamp and oct(conf.stat().st_mode & 0o777) == "0o640"
    assert f"kept existing {conf}" in out
    assert unit.read_bytes() == UNIT.read_bytes()  # the unit is ours: upgrades replace it


def test_real_venv_path(tmp_path: Path) -> None:
    """The venv branch for real: a fresh venv, pip installing this checkout, then a no-op second run.
    ``--no-deps`` keeps it to callguard itself (the dependencies come from the same pip call on a host)."""
    # A private copy of the checkout: pip builds in-tree, and the copy cannot change between the runs.
    src = tmp_path / "src"
    for name in ("callguard", "scripts", "dialplan", "docs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "config.toml"):
        shutil.copy(ROOT / name, src / name)
    script = src / "scripts" / "install.sh"
    root = tmp_path / "root"
    python = Path(sys.base_prefix) / "bin" / "python3"
    env = {"PYTHON": str(python), "CALLGUARD_PIP_OPTS": "--no-deps"}
    run_env = {**os.environ, "DESTDIR": str(root), **env}
    proc = subprocess.run(["bash", str(script)], env=run_env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No matching distribution found for setuptools" in proc.stderr:
        pytest.skip("no package index reachable for pip's build dependencies")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    venv = root / "opt" / "callguard" / "venv"
    assert f"installed callguard into {venv}" in proc.stdout
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import callguard; print(callguard.__version__)"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    assert version and (venv / "bin" / "callguard").exists()
    first = tree_hash(root)
    out = install(root, script, **env)
    assert "venv up to date" in out
    assert tree_hash(root) == first
