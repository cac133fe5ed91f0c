"""provisioning/setup.sh on other boards, played through its inputs (device-tree model, uname -m, userland bits,
apt's python3 folder): 32-bit ARM is refused before anything is done; on a Pi 5 apt gets lgpio and the camera
defaults to picamera2; with apt's numpy 1.x the venv's pip install keeps numpy below 2."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_setup_sh import SETUP


def run(tmp_path: Path, *flags: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    res = subprocess.run(["bash", str(SETUP), "--root", str(root), "--device-id", "kiosk-1", "--python",
                          sys.executable, *flags], capture_output=True, text=True, timeout=60, check=False,
                         stdin=subprocess.DEVNULL, env={**os.environ, **env})
    return res, root


@pytest.mark.parametrize(("env", "what"), [
    ({"EDGE_APP_MACHINE": "armv7l"}, "this is armv7l (32-bit ARM)"),
    ({"EDGE_APP_MACHINE": "armv6l"}, "this is armv6l (32-bit ARM)"),
    ({"EDGE_APP_MACHINE": "aarch64", "EDGE_APP_USER_BITS": "32"}, "the kernel is aarch64 but the OS is 32-bit"),
])
def test_32_bit_arm_is_refused_before_anything_is_done(tmp_path: Path, env: dict[str, str], what: str) -> None:
    res, root = run(tmp_path, "--pip-no-deps", **env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"setup.sh: error: edge-app needs a 64-bit OS: {what}" in res.stderr
    assert "Raspberry Pi OS (64-bit)" in res.stderr
    assert list(root.iterdir()) == []


def test_a_pi_5_gets_lgpio_and_the_pi_camera(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    res, _ = run(tmp_path, "--pip-no-deps", "--dry-run", EDGE_APP_DEVICE_TREE_MODEL=str(model),
                 EDGE_APP_MACHINE="aarch64", EDGE_APP_USER_BITS="64")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the target needs: python3-venv python3-picamera2 python3-lgpio" in res.stdout
    assert 'source = "picamera2"' in res.stdout or "picamera2" in res.stdout


def test_off_a_pi_no_pi_packages(tmp_path: Path) -> None:
    res, _ = run(tmp_path, "--pip-no-deps", "--dry-run", EDGE_APP_DEVICE_TREE_MODEL=str(tmp_path / "none"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the target needs: python3-venv\n" in res.stdout


def apt_numpy(tmp_path: Path, version: str) -> Path:
    d = tmp_path / "dist-packages" / f"numpy-{version}.egg-info"
    d.mkdir(parents=True)
    (d / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: numpy\nVersion: {version}\n")
    return d.parent


@pytest.mark.parametrize(("version", "pinned"), [("1.24.2", True), ("2.2.4", False)])
def test_pip_keeps_numpy_at_apts_major_version(tmp_path: Path, version: str, pinned: bool) -> None:
    res, _ = run(tmp_path, "--dry-run", EDGE_APP_APT_PYTHON_DIR=str(apt_numpy(tmp_path, version)))
    assert res.returncode == 0, res.stdout + res.stderr
    pip = [line for line in res.stdout.splitlines() if line.startswith("+ ") and "pip install" in line]
    assert len(pip) == 1, res.stdout
    words = shlex.split(pip[0][2:])  # the plan prints the command shell-quoted
    assert ("numpy<2" in words and "opencv-python-headless<4.12" in words) is pinned, pip[0]
