"""`edge-app door-off`: de-energise the door relay and exit; systemd runs it after every stop (ExecStopPost).

The daemon puts the relay at rest itself on every way out it sees (SIGTERM, an exception, exit). A process
killed hard (SIGKILL, the watchdog's SIGABRT, a crash in native code) runs none of that, and a GPIO line keeps
the level its owner last set: a strike pulsed at that moment would stay energised (open) until the daemon
is back and has loaded its models, or for good if systemd stops restarting it. De-energised is the lock
hardware's state without the daemon: an electric strike (fail_secure) locked, a maglock (fail_safe) released,
as it is whenever the process is gone (docs/door.md).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import gpiozero

from edge_app.cli import EXIT_OK
from edge_app.cli.common import settings
from edge_app.config import DoorSection
from edge_app.daemon import pin_factory

log = logging.getLogger(__name__)


def relay_off(door: DoorSection, factory: Any) -> None:
    """Drive the relay pin to its inactive level (``relay_active_high`` says which level that is)."""
    relay = gpiozero.OutputDevice(door.relay_pin, active_high=door.relay_active_high, initial_value=False,
                                  pin_factory=factory)
    try:
        relay.off()
    finally:
        relay.close()


def cmd_door_off(args: argparse.Namespace) -> int:
    door = settings(args).door
    relay_off(door, pin_factory(door.pins))
    log.warning("door relay on GPIO %d de-energised (%s: %s)", door.relay_pin, door.lock_type,
                "locked" if door.lock_type == "fail_secure" else "released")
    return EXIT_OK
