"""`edge-app doctor` rows about the board: platform (64-bit, Pi model, numpy vs apt's), the Pi camera stack
(libcamera, picamera2), GPIO library advice and the Coral Edge TPU. Each takes what it reads as arguments
(defaults: the real files and imports), so tests feed other boards' text."""

from __future__ import annotations

import importlib
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from edge_app.errors import PlatformError
from edge_app.hardware import pi

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
Importer = Callable[[str], ModuleType]


def sees_system_packages(dist_packages: Path = pi.DEBIAN_DIST_PACKAGES, path: list[str] | None = None) -> bool:
    """Whether apt's Python packages are importable here (a venv made with --system-site-packages)."""
    return str(dist_packages) in (sys.path if path is None else path)


def check_platform(b: pi.Board, *, dist_packages: Path = pi.DEBIAN_DIST_PACKAGES, os_release: Path = pi.OS_RELEASE,
                   machine: str | None = None, pointer_bytes: int | None = None,
                   path: list[str] | None = None) -> tuple[str, str]:
    import numpy as np

    try:
        pi.check_64bit(machine, pointer_bytes)
    except PlatformError as exc:
        return FAIL, str(exc)
    osr = pi.os_release(os_release)
    system_numpy = pi.debian_numpy_version(dist_packages)
    detail = (f"{b.model or 'not a Raspberry Pi'}; {osr.get('PRETTY_NAME', 'unknown OS')}; "
              f"{machine or platform.machine()}; Python {platform.python_version()}; numpy {np.__version__}"
              + (f" (apt's: {system_numpy})" if system_numpy else ""))
    clash = pi.numpy_clash(np.__version__, system_numpy, sees_system_packages(dist_packages, path))
    if clash:
        return FAIL, f"{detail}: {clash}"
    return OK, detail


def check_camera_stack(source: str, b: pi.Board, import_module: Importer = importlib.import_module,
                       find_library: Callable[[str], str | None] = pi.find_library) -> tuple[str, str]:
    """libcamera and picamera2 when the camera is the Pi's own (source "picamera2")."""
    if source != "picamera2":
        return SKIP, f"camera source is {source!r}, not picamera2"
    where = b.model or "this machine"
    lib = find_library("camera")
    if lib is None:
        return FAIL, (f"{where}: libcamera not found; on Raspberry Pi OS: sudo apt install python3-picamera2 "
                      "(pulls libcamera); a Pi camera needs Raspberry Pi OS's libcamera, not Debian's")
    try:
        mod = import_module("picamera2")
    except ImportError as exc:
        text = str(exc)
        if "numpy" in text.lower():
            return FAIL, (f"picamera2 does not import with this numpy ({text.splitlines()[0]}): apt's picamera2 "
                          "is built against apt's numpy; keep the venv's numpy at the same major version "
                          "(provisioning/setup.sh does: numpy<2 on bookworm)")
        return FAIL, (f"picamera2 not importable ({text}): sudo apt install python3-picamera2 and a venv made "
                      "with --system-site-packages")
    cameras = mod.Picamera2.global_camera_info()
    if not cameras:
        return FAIL, f"{lib} and picamera2 present, but libcamera sees no camera: check the ribbon cable"
    names = ", ".join(str(c.get("Model", "?")) for c in cameras)
    return OK, f"{lib}; picamera2; camera(s): {names}"


def gpio_problem(b: pi.Board, factory_name: str | None,
                 import_module: Importer = importlib.import_module) -> str | None:
    try:
        import_module("lgpio")
        lgpio = True
    except ImportError:
        lgpio = False
    return pi.pin_factory_problem(b, factory_name, lgpio)


def check_coral(usb_devices: Path = pi.SYS_USB_DEVICES, dev: Path = pi.DEV,
                find_library: Callable[[str], str | None] = pi.find_library) -> tuple[str, str]:
    devices = pi.coral_devices(usb_devices, dev)
    lib = find_library("edgetpu")
    if not devices and lib is None:
        return SKIP, "no Coral Edge TPU and no libedgetpu: inference on the CPU"
    if devices and lib is None:
        return WARN, (f"{'; '.join(devices)} found but libedgetpu is not installed (Coral's apt repository: "
                      "libedgetpu1-std); docs/coral.md")
    if not devices:
        return WARN, f"{lib} installed but no Edge TPU on USB or PCIe"
    return OK, f"{'; '.join(devices)}; {lib} (the models must be compiled for it: docs/coral.md)"
