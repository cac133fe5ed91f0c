"""The systemd unit and tmpfiles.d entry, checked by systemd's own tools (systemd-analyze, systemd-tmpfiles)."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edge-app.service"
TMPFILES = ROOT / "systemd" / "edge-app.tmpfiles.conf"


def tool(name: str) -> str:
    return require_tool(name, "systemd")


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit as shipped, with ExecStart pointing at this venv's edge-app (the /opt path exists only
    on a provisioned kiosk, and verify checks that the binary exists)."""
    exe = Path(sys.executable).parent / "edge-app"
    assert exe.is_file(), exe
    text = UNIT.read_text().replace("/opt/edge-app/venv/bin/edge-app", str(exe))
    out = tmp_path / "edge-app.service"
    out.write_text(text)
    return out


def test_unit_passes_systemd_analyze_verify(tmp_path):
    res = subprocess.run([tool("systemd-analyze"), "verify", str(unit_for_this_machine(tmp_path))],
                         capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert res.returncode == 0 and problems == [], problems


def test_security_exposure_is_at_most_2_5(tmp_path):
    res = subprocess.run([tool("systemd-analyze"), "security", "--offline=yes", str(unit_for_this_machine(tmp_path))],
                         capture_output=True, text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for edge-app\.service: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 2.5, res.stdout


def test_unit_promises():
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    svc = cp["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    assert svc["User"] == "edge-app" and "gpio" in svc["SupplementaryGroups"] and "video" in svc["SupplementaryGroups"]
    text = UNIT.read_text()
    assert "DeviceAllow=char-gpiochip rw" in text and "DeviceAllow=char-video4linux rw" in text
    assert "PrivateDevices" not in svc  # it would hide /dev/gpiochip* and the camera
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    # After any stop, a crash or watchdog kill included, the relay is de-energised by a separate process.
    assert svc["ExecStopPost"] == "/opt/edge-app/venv/bin/edge-app door-off --config /etc/edge-app/config.toml"


def test_tmpfiles_creates_state_dirs_with_owners(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nedge-app:x:998:998::/var/lib/edge-app:/x\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nedge-app:x:998:\n")
    res = subprocess.run([tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create", str(TMPFILES)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    state = tmp_path / "var" / "lib" / "edge-app"
    assert (state.stat().st_mode & 0o777, state.stat().st_uid, state.stat().st_gid) == (0o750, 998, 998)
    assert (state / "snapshots").is_dir()
    etc = tmp_path / "etc" / "edge-app"
    assert (etc.stat().st_mode & 0o777, etc.stat().st_uid, etc.stat().st_gid) == (0o750, 0, 998)
