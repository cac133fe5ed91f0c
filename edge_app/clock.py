"""Is the wall clock synchronised? Asked by `edge-app doctor` and, before every signed command, by the
command verifier: the replay window of a command means nothing on a clock that is wrong (a Pi has no
RTC and boots with the time it last saved).

``clock_sync()`` answers True (synchronised), False (known NOT to be) or None (cannot tell: no
systemd, as in a container). ``ClockSync`` caches the answer for the verifier, which asks per command.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

TIMESYNCD_FLAG: Final = Path("/run/systemd/timesync/synchronized")
CACHE_S: Final = 10.0  # a command flood must not start a timedatectl per command


@dataclass(frozen=True)
class ClockStatus:
    synced: bool | None  # None: cannot tell
    detail: str


def clock_sync() -> ClockStatus:
    """timedatectl's NTPSynchronized, else systemd-timesyncd's flag file."""
    tool = shutil.which("timedatectl")
    if tool:
        try:
            res = subprocess.run([tool, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True,
                                 timeout=5, check=False)
            value = res.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            value = ""
        if value == "yes":
            return ClockStatus(True, "synchronised (timedatectl)")
        if value == "no":
            return ClockStatus(False, "NOT synchronised (timedatectl NTPSynchronized=no)")
    if TIMESYNCD_FLAG.exists():
        return ClockStatus(True, "synchronised (systemd-timesyncd)")
    return ClockStatus(None, "cannot tell whether the clock is synchronised (no timedatectl answer)")


class ClockSync:
    """``clock_sync`` (or an injected probe), asked at most every ``cache_s`` seconds; thread-safe."""

    def __init__(self, probe: Callable[[], ClockStatus] = clock_sync, cache_s: float = CACHE_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 unknown_note: str = "signed commands are accepted on the clock as it is") -> None:
        self.probe, self.cache_s, self.monotonic = probe, cache_s, monotonic
        self.unknown_note = unknown_note  # logged once when the answer is "cannot tell"
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._status = ClockStatus(None, "not asked yet")
        self._warned_unknown = False

    def status(self) -> ClockStatus:
        with self._lock:
            now = self.monotonic()
            if now - self._at >= self.cache_s:
                self._status, self._at = self.probe(), now
                if self._status.synced is None and not self._warned_unknown:
                    self._warned_unknown = True
                    log.warning("%s: %s", self._status.detail, self.unknown_note)
            return self._status
