"""Board facts (edge_app.hardware.pi) and doctor's board rows, fed with other boards' /proc and /sys text."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from edge_app.cli import doctor_pi, main
from edge_app.errors import EdgeAppError, PlatformError
from edge_app.hardware import pi

CPUINFO_PI4 = """processor\t: 3
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08
Hardware\t: BCM2835
Revision\t: c03114
Serial\t\t: 10000000abcdef01
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
CPUINFO_X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("model", "generation"), [
    ("Raspberry Pi 5 Model B Rev 1.0\x00", 5),
    ("Raspberry Pi 4 Model B Rev 1.5\x00", 4),
    ("Raspberry Pi Compute Module 4 Rev 1.1\x00", 4),
    ("Raspberry Pi 3 Model B Plus Rev 1.3\x00", 3),
    ("Raspberry Pi Zero 2 W Rev 1.0\x00", 3),
])
def test_board_from_the_device_tree(tmp_path: Path, model: str, generation: int) -> None:
    b = pi.board(write(tmp_path / "model", model), tmp_path / "no-cpuinfo")
    assert b.is_pi and b.generation == generation and b.model == model.rstrip("\x00")


def test_board_from_cpuinfo_when_there_is_no_device_tree(tmp_path: Path) -> None:
    b = pi.board(tmp_path / "absent", write(tmp_path / "cpuinfo", CPUINFO_PI4))
    assert b == pi.Board("Raspberry Pi 4 Model B Rev 1.4", 4)


def test_not_a_pi(tmp_path: Path) -> None:
    assert pi.board(tmp_path / "absent", write(tmp_path / "cpuinfo", CPUINFO_X86)) == pi.Board(None, None)
    assert not pi.board(write(tmp_path / "model", "QEMU Virtual Machine\x00"), tmp_path / "x").is_pi


@pytest.mark.parametrize(("machine", "pointer", "what"), [
    ("armv7l", 4, "this is armv7l (32-bit ARM)"),
    ("armv6l", 4, "this is armv6l (32-bit ARM)"),
    ("aarch64", 4, "the kernel is aarch64 but this Python is 32-bit"),
])
def test_32_bit_is_refused_with_the_way_out(machine: str, pointer: int, what: str) -> None:
    with pytest.raises(PlatformError) as exc:
        pi.check_64bit(machine, pointer)
    assert what in str(exc.value) and "Raspberry Pi OS (64-bit)" in str(exc.value)
    assert isinstance(exc.value, EdgeAppError) and isinstance(exc.value, RuntimeError)


@pytest.mark.parametrize("machine", ["aarch64", "x86_64", "arm64"])
def test_64_bit_passes(machine: str) -> None:
    pi.check_64bit(machine, 8)


def test_cli_refuses_a_32_bit_arm(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    monkeypatch.setattr("platform.machine", lambda: "armv7l")
    assert main(["gallery", "list", "--db", str(tmp_path / "g.db")]) == 1
    assert "needs a 64-bit OS: this is armv7l" in capsys.readouterr().err
    assert not (tmp_path / "g.db").exists()


def test_doctor_reports_a_32_bit_arm_as_a_failed_row(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr("platform.machine", lambda: "armv7l")
    skip = "models,camera,camera_stack,gpio,sqlite,mqtt,clock,disk,coral"
    assert main(["doctor", "--db", str(tmp_path / "g.db"), "--skip", skip]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[:-1]}
    assert {k: v for k, v in rows.items() if v != "SKIP"} == {"config": "OK", "platform": "FAIL"} and "armv7l" in out


PI5 = pi.Board("Raspberry Pi 5 Model B Rev 1.0", 5)
PI4 = pi.Board("Raspberry Pi 4 Model B Rev 1.5", 4)


def test_pin_factory_on_a_pi_5_needs_lgpio() -> None:
    assert "install python3-lgpio" in (pi.pin_factory_problem(PI5, None, lgpio_importable=False) or "")
    assert "RPiGPIOFactory, which cannot drive the Pi 5" in (
        pi.pin_factory_problem(PI5, "RPiGPIOFactory", lgpio_importable=True) or "")
    assert pi.pin_factory_problem(PI5, "LGPIOFactory", lgpio_importable=True) is None


def test_pin_factory_on_a_pi_4_and_off_a_pi() -> None:
    assert pi.pin_factory_problem(PI4, "RPiGPIOFactory", lgpio_importable=False) is None
    assert pi.pin_factory_problem(PI4, "LGPIOFactory", lgpio_importable=True) is None
    assert "no GPIO library" in (pi.pin_factory_problem(PI4, None, lgpio_importable=False) or "")
    assert pi.pin_factory_problem(pi.Board(None, None), None, lgpio_importable=False) is None


def fake_apt_numpy(tmp_path: Path, version: str) -> Path:
    """A dist-packages folder as Debian's python3-numpy leaves it (metadata only: nothing is imported)."""
    d = tmp_path / "dist-packages"
    write(d / f"numpy-{version}.egg-info" / "PKG-INFO", f"Metadata-Version: 2.1\nName: numpy\nVersion: {version}\n")
    return d


def test_apt_numpy_version_is_read_without_importing_it(tmp_path: Path) -> None:
    assert pi.debian_numpy_version(fake_apt_numpy(tmp_path, "1.24.2")) == "1.24.2"
    assert pi.debian_numpy_version(tmp_path / "nowhere") is None


def test_numpy_clash_rules() -> None:
    assert "numpy<2" in (pi.numpy_clash("2.4.6", "1.24.2", sees_system_packages=True) or "")
    assert pi.numpy_clash("1.26.4", "1.24.2", sees_system_packages=True) is None
    assert pi.numpy_clash("2.4.6", "2.2.4", sees_system_packages=True) is None
    assert pi.numpy_clash("2.4.6", "1.24.2", sees_system_packages=False) is None  # apt's modules are not seen
    assert "install numpy 2.x" in (pi.numpy_clash("1.26.4", "2.2.4", sees_system_packages=True) or "")


def test_doctor_platform_row(tmp_path: Path) -> None:
    apt = fake_apt_numpy(tmp_path, "1.24.2")
    osr = write(tmp_path / "os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    status, detail = doctor_pi.check_platform(PI5, dist_packages=apt, os_release=osr, machine="aarch64",
                                              pointer_bytes=8, path=[str(apt)])
    clash = np.__version__.split(".")[0] != "1"
    assert (status, "Raspberry Pi 5" in detail, "bookworm" in detail, "apt's: 1.24.2" in detail) == (
        "fail" if clash else "ok", True, True, True)
    # The same numpy is fine when the venv does not see apt's packages.
    assert doctor_pi.check_platform(PI5, dist_packages=apt, os_release=osr, machine="aarch64", pointer_bytes=8,
                                    path=[])[0] == "ok"
    assert doctor_pi.check_platform(PI4, machine="aarch64", pointer_bytes=4)[0] == "fail"


def picamera2_module(cameras: list[dict[str, object]]) -> types.ModuleType:
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = type("Picamera2", (), {"global_camera_info": staticmethod(lambda: cameras)})  # type: ignore[attr-defined]
    return mod


def test_camera_stack_checks() -> None:
    assert doctor_pi.check_camera_stack("0", PI4)[0] == "skip"
    status, detail = doctor_pi.check_camera_stack("picamera2", PI4, find_library=lambda _n: None)
    assert status == "fail" and "libcamera not found" in detail
    lib = lambda _n: "libcamera.so.0.3"  # noqa: E731
    # picamera2 is really absent here (it exists only in Raspberry Pi OS's apt repository).
    status, detail = doctor_pi.check_camera_stack("picamera2", PI4, find_library=lib)
    assert status == "fail" and "sudo apt install python3-picamera2" in detail

    def numpy_broken(_name: str) -> types.ModuleType:
        raise ImportError("numpy.core.multiarray failed to import")

    status, detail = doctor_pi.check_camera_stack("picamera2", PI4, import_module=numpy_broken, find_library=lib)
    assert status == "fail" and "same major version" in detail
    status, detail = doctor_pi.check_camera_stack("picamera2", PI4, import_module=lambda _n: picamera2_module([]),
                                                  find_library=lib)
    assert status == "fail" and "sees no camera" in detail
    status, detail = doctor_pi.check_camera_stack(
        "picamera2", PI4, import_module=lambda _n: picamera2_module([{"Model": "imx708"}]), find_library=lib)
    assert status == "ok" and "imx708" in detail


def test_coral_detection(tmp_path: Path) -> None:
    usb, dev = tmp_path / "usb", tmp_path / "dev"
    write(usb / "1-1" / "idVendor", "1d6b\n")
    write(usb / "1-1" / "idProduct", "0003\n")
    dev.mkdir()
    no_lib = lambda _n: None  # noqa: E731
    assert doctor_pi.check_coral(usb, dev, no_lib)[0] == "skip"
    write(usb / "1-1.2" / "idVendor", "18d1\n")
    write(usb / "1-1.2" / "idProduct", "9302\n")
    status, detail = doctor_pi.check_coral(usb, dev, no_lib)
    assert status == "warn" and "Coral USB Accelerator at USB 1-1.2 (18d1:9302)" in detail and "libedgetpu" in detail
    write(dev / "apex_0", "")
    status, detail = doctor_pi.check_coral(usb, dev, lambda _n: "libedgetpu.so.1")
    assert status == "ok" and "apex_0" in detail and "libedgetpu.so.1" in detail
    assert pi.coral_devices(usb, tmp_path / "none") == ["Coral USB Accelerator at USB 1-1.2 (18d1:9302)"]
    write(usb / "2-1" / "idVendor", "1a6e\n")
    write(usb / "2-1" / "idProduct", "089a\n")
    assert "firmware not yet loaded" in pi.coral_devices(usb, dev)[1]
