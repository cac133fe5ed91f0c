"""systemd's notify protocol (READY=1, WATCHDOG=1, STOPPING=1, STATUS=...) without a dependency.

systemd passes a datagram socket in $NOTIFY_SOCKET (a path, or "@name" for the abstract
namespace) and, with WatchdogSec=, the interval in $WATCHDOG_USEC for the process $WATCHDOG_PID.
Outside systemd there is no socket and every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send "KEY=value" lines; False when not run by systemd (or the send failed, which is logged)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
        return True
    except OSError as exc:
        log.warning("sd_notify %s to %s failed: %s", states, os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def watchdog_interval() -> float | None:
    """Seconds within which systemd wants WATCHDOG=1, or None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec) / 1e6
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value if value > 0 else None
