"""Facts about the board and OS this runs on: 64-bit or not, which Raspberry Pi, which numpy apt has.

Every reader takes its file as an argument (default: the real one), so tests feed /proc/cpuinfo and
device-tree text from other boards. Nothing here imports gpiozero, picamera2 or numpy's C parts.
"""

from __future__ import annotations

import ctypes.util
import platform
import re
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edge_app.errors import PlatformError

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
CPUINFO = Path("/proc/cpuinfo")
OS_RELEASE = Path("/etc/os-release")
# Where Debian's python3-* packages live (python3-numpy, python3-picamera2, python3-lgpio).
DEBIAN_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
ARM32_MACHINES = ("armv6l", "armv7l", "armv8l", "armhf", "arm")

SIXTY_FOUR_BIT_ONLY = (
    "edge-app needs a 64-bit OS: {what}. Its runtime (ai-edge-litert) and OpenCV publish no 32-bit ARM wheels. "
    "Flash 'Raspberry Pi OS (64-bit)' (bookworm or trixie) with Raspberry Pi Imager; a Pi 3, 4, 5 or Zero 2 W "
    "runs it.")


@dataclass(frozen=True)
class Board:
    model: str | None  # "Raspberry Pi 5 Model B Rev 1.0"; None: not a Raspberry Pi as far as we can tell
    generation: int | None  # 3, 4, 5 (Zero 2 W counts as 3, Compute Modules as their Pi); None: unknown

    @property
    def is_pi(self) -> bool:
        return self.model is not None


def _read(path: Path) -> str | None:
    try:
        # The device-tree string ends in a NUL byte.
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


_GENERATION = re.compile(r"raspberry pi (?:compute module )?(\d+)|raspberry pi (zero 2)", re.IGNORECASE)


def board(model_path: Path = DEVICE_TREE_MODEL, cpuinfo_path: Path = CPUINFO) -> Board:
    """The Raspberry Pi model from the device tree, or else from /proc/cpuinfo's "Model" line."""
    text = _read(model_path)
    if not text or "raspberry pi" not in text.lower():
        cpuinfo = _read(cpuinfo_path) or ""
        m = re.search(r"^Model\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        text = m.group(1).strip() if m else None
    if not text or "raspberry pi" not in text.lower():
        return Board(None, None)
    g = _GENERATION.search(text)
    generation = None if g is None else (3 if g.group(2) else int(g.group(1)))
    return Board(text, generation)


def check_64bit(machine: str | None = None, pointer_bytes: int | None = None) -> None:
    """Raise PlatformError on 32-bit ARM, including a 32-bit userland on a 64-bit kernel (uname says
    aarch64, yet the interpreter is 32-bit: Raspberry Pi OS 32-bit on a Pi 4 or 5)."""
    machine = machine if machine is not None else platform.machine()
    bits = 8 * (pointer_bytes if pointer_bytes is not None else struct.calcsize("P"))
    if machine.lower() in ARM32_MACHINES:
        raise PlatformError(SIXTY_FOUR_BIT_ONLY.format(what=f"this is {machine} (32-bit ARM)"))
    if machine.lower() in ("aarch64", "arm64") and bits == 32:
        raise PlatformError(SIXTY_FOUR_BIT_ONLY.format(
            what=f"the kernel is {machine} but this Python is 32-bit (a 32-bit OS on a 64-bit kernel)"))


def pin_factory_problem(b: Board, factory_name: str | None, lgpio_importable: bool) -> str | None:
    """Why the pins will not work on this board (None: fine). factory_name: gpiozero's class name."""
    if not b.is_pi:
        return None
    if b.generation is not None and b.generation >= 5:
        if not lgpio_importable:
            return (f"{b.model}: GPIO needs lgpio (RP1 chip); install python3-lgpio with apt "
                    "(the kiosk venv uses --system-site-packages) or `pip install lgpio`")
        if factory_name is not None and factory_name != "LGPIOFactory":
            return (f"{b.model}: gpiozero picked {factory_name}, which cannot drive the Pi 5's RP1 GPIO; "
                    "unset GPIOZERO_PIN_FACTORY or set it to lgpio")
    elif factory_name is None and not lgpio_importable:
        return f"{b.model}: no GPIO library found; install python3-lgpio (or python3-rpi-lgpio) with apt"
    return None


def os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (_read(path) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def debian_numpy_version(dist_packages: Path = DEBIAN_DIST_PACKAGES) -> str | None:
    """Version of apt's python3-numpy, read from its metadata (importing it is impossible in a venv whose
    own numpy shadows it)."""
    if not dist_packages.is_dir():
        return None
    for dist in metadata.distributions(path=[str(dist_packages)]):
        if (dist.metadata["Name"] or "").lower() == "numpy":
            return str(dist.version)
    return None


def numpy_clash(venv_numpy: str, system_numpy: str | None, sees_system_packages: bool) -> str | None:
    """A message when apt's compiled modules (python3-picamera2 and what it imports) would meet a numpy of
    another major version than the one they were built against; None when they cannot meet or agree."""
    if system_numpy is None or not sees_system_packages:
        return None
    if venv_numpy.split(".")[0] == system_numpy.split(".")[0]:
        return None
    return (f"numpy {venv_numpy} in the venv but apt's python3-numpy is {system_numpy}: modules from apt "
            f"(python3-picamera2, simplejpeg) are built against numpy {system_numpy.split('.')[0]}.x and fail to "
            f"import; reinstall with `pip install 'numpy<2' 'opencv-python-headless<4.12'`"
            if system_numpy.startswith("1.") else
            f"numpy {venv_numpy} in the venv but apt's python3-numpy is {system_numpy}: install numpy "
            f"{system_numpy.split('.')[0]}.x into the venv")


# Coral Edge TPU: USB before its firmware is loaded (Global Unichip) and after (Google); PCIe/M.2 via gasket.
CORAL_USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator (firmware not yet loaded)",
                 ("18d1", "9302"): "Coral USB Accelerator"}
SYS_USB_DEVICES = Path("/sys/bus/usb/devices")
DEV = Path("/dev")


def coral_devices(usb_devices: Path = SYS_USB_DEVICES, dev: Path = DEV) -> list[str]:
    """Edge TPUs present: USB ones by vendor:product id in sysfs (what lsusb reads), PCIe ones as /dev/apex_N."""
    found = []
    for d in sorted(usb_devices.glob("*")) if usb_devices.is_dir() else []:
        ids = (_read(d / "idVendor"), _read(d / "idProduct"))
        if ids in CORAL_USB_IDS:
            found.append(f"{CORAL_USB_IDS[ids]} at USB {d.name} ({ids[0]}:{ids[1]})")
    found += [f"Coral PCIe/M.2 Edge TPU {p}" for p in sorted(dev.glob("apex_*"))] if dev.is_dir() else []
    return found


def find_library(name: str) -> str | None:
    """ctypes' search (ldconfig cache, LD_LIBRARY_PATH): 'edgetpu' -> 'libedgetpu.so.1'."""
    return ctypes.util.find_library(name)
