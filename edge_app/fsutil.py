"""Private files and folders: faces and templates must not be readable by other local users.

Modes are set explicitly (not left to the umask): a kiosk started by hand, from cron or a shell with
umask 000 must not write world-readable face data. Folders that already exist are left as they are
(a home directory, or /var/lib/edge-app that systemd-tmpfiles made 0750 on purpose).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600


def private_dir(path: str | Path) -> Path:
    """Create `path` and any missing parents, each new one 0700; existing ones are not touched."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def create_private_file(path: str | Path) -> bool:
    """Create an empty 0600 file if there is none; True if this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def write_private(path: str | Path, data: bytes) -> Path:
    """Write `data` to a new 0600 file (folders 0700), atomically: a full disk leaves no partial file
    behind and raises OSError."""
    path = Path(path)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
