"""`edge-app door-off` (systemd's ExecStopPost): the relay de-energised after the daemon is gone, however it went."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gpiozero
import pytest
from gpiozero.pins.mock import MockFactory

from edge_app.cli import EXIT_ERROR, EXIT_OK
from edge_app.cli.door_off import relay_off
from edge_app.config import parse_config

EXE = Path(sys.executable).parent / "edge-app"


@pytest.mark.parametrize("active_high", [True, False])
def test_a_relay_left_energised_by_a_killed_daemon_is_de_energised(active_high):
    factory = MockFactory()
    # What a daemon killed in mid-pulse leaves behind: the relay output driven to its active level.
    left = gpiozero.OutputDevice(17, active_high=active_high, initial_value=True, pin_factory=factory)
    assert factory.pin(17).state == active_high
    left.close()  # the process is gone; the line keeps its level (the mock pin keeps its state)
    assert factory.pin(17).state == active_high
    door = parse_config(f'[door]\npins = "mock"\nrelay_pin = 17\nrelay_active_high = {str(active_high).lower()}\n').door
    relay_off(door, factory)
    assert factory.pin(17).state == (not active_high)  # inactive: the lock's unpowered state


def test_cli_door_off_exits_0_and_names_the_pin_and_a_bad_key_is_an_error(tmp_path):
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text('[door]\npins = "mock"\nrelay_pin = 22\nlock_type = "fail_secure"\n')
    res = subprocess.run([str(EXE), "door-off", "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == EXIT_OK and "door relay on GPIO 22 de-energised (fail_secure: locked)" in res.stderr
    cfg.write_text('[door]\npins = "mock"\nrelay_pinn = 22\n')
    res = subprocess.run([str(EXE), "door-off", "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == EXIT_ERROR and "relay_pinn" in res.stderr and "kiosk.toml" in res.stderr
