"""The door: lock relay, door contact, request-to-exit button, held-open and forced-open alarms.

The relay starts locked and goes back to locked when a pulse ends, on lock(), on close(), when a
``with Door(...)`` block raises and at interpreter exit (atexit). Signals belong to the daemon: its
handler only has to call close() (or raise SystemExit so that ``with`` / atexit do it).

Wiring assumed (gpiozero's internal pull-ups, switches to GND):
- door contact: a reed switch; NC (circuit closed while the door is closed) unless contact_normally_open.
  A cut wire on an NC contact reads as "open", which is what a door alarm wants.
- exit button: a normally-open push button; pressed = pin low.

One small named worker thread ("door-timer") ends pulses and raises the held-open alarm; it sleeps on a
condition variable until the next deadline. Events go to ``on_event`` outside the lock, from whichever
thread caused them (caller, gpiozero's callback thread, or the worker).
"""

from __future__ import annotations

import atexit
import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import gpiozero

from edge_app.errors import DoorError

log = logging.getLogger(__name__)

LOCK_TYPES = ("fail_secure", "fail_safe")
PULSE_MIN_S, PULSE_MAX_S = 0.2, 60.0
GRANT_GRACE_S = 1.0  # an opening this long after a pulse ends is still the granted person (slow hand, strike lag)
MAX_BCM_PIN = 53

@dataclass(frozen=True)
class DoorConfig:
    relay_pin: int = 17
    # "fail_secure": electric strike, relay energised = unlocked; "fail_safe": maglock, relay energised = locked
    lock_type: str = "fail_secure"
    relay_active_high: bool = True
    pulse_seconds: float = 3.0  # 0.2 .. 60
    contact_pin: int | None = None  # door contact (reed switch); None = no contact fitted
    contact_normally_open: bool = False  # NC reed (closed circuit while the door is closed) is the usual
    exit_button_pin: int | None = None  # request-to-exit
    held_open_seconds: float = 30.0  # alarm when the door stays open longer than this after a grant

    def __post_init__(self) -> None:
        for name in ("relay_pin", "contact_pin", "exit_button_pin"):
            pin = getattr(self, name)
            if pin is None and name != "relay_pin":
                continue
            if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= MAX_BCM_PIN:
                raise ValueError(f"{name} must be a BCM GPIO number 0..{MAX_BCM_PIN}, got {pin!r}")
        pins = [(n, getattr(self, n)) for n in ("relay_pin", "contact_pin", "exit_button_pin")]
        used = [(n, p) for n, p in pins if p is not None]
        for i, (name, pin) in enumerate(used):
            for other, other_pin in used[:i]:
                if pin == other_pin:
                    raise ValueError(f"{name} and {other} both use GPIO {pin}")
        if self.lock_type not in LOCK_TYPES:
            raise ValueError(f"lock_type must be one of {', '.join(LOCK_TYPES)}, got {self.lock_type!r}")
        for name in ("relay_active_high", "contact_normally_open"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_seconds("pulse_seconds", self.pulse_seconds, PULSE_MIN_S, PULSE_MAX_S)
        _check_seconds("held_open_seconds", self.held_open_seconds, 0.0, 86400.0, low_inclusive=False)


def _check_seconds(name: str, value: object, low: float, high: float, low_inclusive: bool = True) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not (value >= low if low_inclusive else value > low) or value > high):
        rng = f"{low:g}..{high:g}" if low_inclusive else f"> {low:g} and <= {high:g}"
        raise ValueError(f"{name} must be {rng} seconds, got {value!r}")


class DoorEvent(enum.Enum):
    UNLOCKED = "unlocked"
    LOCKED = "locked"
    OPENED = "opened"
    CLOSED = "closed"
    EXIT_REQUEST = "exit_request"
    HELD_OPEN = "held_open"
    FORCED_OPEN = "forced_open"


EventSink = Callable[[DoorEvent, dict[str, object]], None]
_Pending = list[tuple[DoorEvent, dict[str, object]]]


class Door:
    def __init__(self, config: DoorConfig, pin_factory: gpiozero.Factory | None = None,
                 on_event: EventSink | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self._on_event, self._clock = config, on_event, clock
        # RLock: a signal handler runs on the main thread and may call close() while that thread is inside unlock().
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._locked = True
        self._relock_at: float | None = None  # end of the current pulse
        self._grant_until = -math.inf  # an opening before this is authorised
        self._held_at: float | None = None  # held-open alarm deadline for the current authorised opening
        self._door_open: bool | None = None
        self._energised_locks = config.lock_type == "fail_safe"
        self._relay: gpiozero.OutputDevice | None = None
        self._contact: gpiozero.DigitalInputDevice | None = None
        self._button: gpiozero.Button | None = None
        try:
            # initial_value sets the pin as output *and* level in one step: no unlocked glitch at start.
            self._relay = gpiozero.OutputDevice(config.relay_pin, active_high=config.relay_active_high,
                                                initial_value=self._energised_locks, pin_factory=pin_factory)
            if config.contact_pin is not None:
                self._contact = gpiozero.DigitalInputDevice(config.contact_pin, pull_up=True,
                                                            pin_factory=pin_factory)
                self._door_open = self._read_contact()
                if self._door_open:
                    log.warning("door contact on GPIO %d reads open at start", config.contact_pin)
                self._contact.when_activated = self._contact_changed
                self._contact.when_deactivated = self._contact_changed
            if config.exit_button_pin is not None:
                self._button = gpiozero.Button(config.exit_button_pin, pull_up=True, bounce_time=0.05,
                                               pin_factory=pin_factory)
                self._button.when_pressed = self._exit_pressed
        except BaseException:
            self._release_devices()
            raise
        self._worker = threading.Thread(target=self._run, name="door-timer", daemon=True)
        self._worker.start()
        atexit.register(self.close)
        log.info("door ready: relay GPIO %d (%s), contact %s, exit button %s", config.relay_pin, config.lock_type,
                 config.contact_pin, config.exit_button_pin)

    # -- public API --------------------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def door_open(self) -> bool | None:
        """True/False from the contact; None when no contact is fitted."""
        return self._door_open

    def unlock(self, seconds: float | None = None, reason: str = "grant") -> None:
        """Release the lock for `seconds` (default pulse_seconds); returns at once, the worker re-locks.

        Unlocking during a pulse extends it to now + seconds (never shortens it); the relay is not toggled.
        A strike is kept released for the whole pulse even when the door opens early: simple, and the
        door contact still tells the truth.
        """
        secs = self.config.pulse_seconds if seconds is None else seconds
        _check_seconds("seconds", secs, PULSE_MIN_S, PULSE_MAX_S)
        events: _Pending = []
        with self._lock:
            if self._closed:
                raise DoorError("door is closed; cannot unlock")
            now = self._clock()
            until = now + secs
            self._grant_until = max(self._grant_until, until + GRANT_GRACE_S)
            if self._locked:
                try:
                    self._write_relay(locked=False)
                except Exception as e:
                    self._safe_relock()
                    raise DoorError(f"relay on GPIO {self.config.relay_pin} failed to unlock: {e}") from e
                self._relock_at = until
                events.append((DoorEvent.UNLOCKED, {"reason": reason, "seconds": secs}))
            elif self._relock_at is None or until > self._relock_at:
                self._relock_at = until
                log.debug("pulse extended by %s (%.2f s)", reason, secs)
            self._wake.notify_all()
        self._emit(events)

    def lock(self) -> None:
        """Lock now and cancel a pending pulse; also revokes the grace window of the last grant."""
        events: _Pending = []
        with self._lock:
            if self._closed:
                return  # close() already locked
            self._grant_until = min(self._grant_until, self._clock() + GRANT_GRACE_S)
            self._lock_now("lock", events)
        self._emit(events)

    def close(self) -> None:
        """Lock, stop the worker, release the GPIO devices. Idempotent; safe from atexit and signal handlers."""
        events: _Pending = []
        with self._lock:
            if self._closed:
                return
            try:
                self._lock_now("close", events)
            except Exception:
                log.exception("door: locking on close failed")
            self._closed = True
            self._relock_at = self._held_at = None
            self._wake.notify_all()
            atexit.unregister(self.close)
        # Outside the lock: a pin factory may wait for its callback thread, which may be waiting for our lock.
        self._release_devices()
        # Short timeout: from a signal handler that interrupted unlock() we still hold the RLock, so the worker
        # cannot wake to see _closed; it is a daemon thread and does nothing once closed, so just move on.
        if self._worker is not threading.current_thread():
            self._worker.join(timeout=0.5)
        self._emit(events)
        log.info("door closed (relay locked)")

    def __enter__(self) -> Door:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals (call with self._lock held unless noted) ---------------------------------------------------

    def _write_relay(self, locked: bool) -> None:
        assert self._relay is not None
        self._relay.value = locked == self._energised_locks  # energised <=> "active"
        self._locked = locked

    def _lock_now(self, reason: str, events: _Pending) -> None:
        was_locked = self._locked
        self._relock_at = None
        self._write_relay(locked=True)
        if not was_locked:
            events.append((DoorEvent.LOCKED, {"reason": reason}))

    def _safe_relock(self) -> None:
        try:
            self._write_relay(locked=True)
        except Exception:
            log.exception("door: relay on GPIO %d failed to lock", self.config.relay_pin)

    def _read_contact(self) -> bool:
        assert self._contact is not None
        closed_circuit = bool(self._contact.is_active)  # pull-up: active = pin low = circuit closed
        return closed_circuit if self.config.contact_normally_open else not closed_circuit

    def _release_devices(self) -> None:
        for dev in (self._button, self._contact, self._relay):
            if dev is not None:
                try:
                    dev.close()
                except Exception:
                    log.exception("door: closing %r failed", dev)

    def _contact_changed(self) -> None:
        """gpiozero callback (its thread). Reads the level instead of trusting the edge: bounces collapse."""
        events: _Pending = []
        with self._lock:
            if self._closed or self._contact is None:
                return
            is_open = self._read_contact()
            if is_open == self._door_open:
                return
            self._door_open = is_open
            now = self._clock()
            if is_open:
                authorised = not self._locked or now <= self._grant_until
                events.append((DoorEvent.OPENED, {"authorised": authorised}))
                if authorised:
                    self._held_at = now + self.config.held_open_seconds
                    self._wake.notify_all()
                else:
                    events.append((DoorEvent.FORCED_OPEN, {}))
            else:
                self._held_at = None
                events.append((DoorEvent.CLOSED, {}))
        self._emit(events)

    def _exit_pressed(self) -> None:
        """gpiozero callback: request-to-exit opens the door like a grant."""
        self._emit([(DoorEvent.EXIT_REQUEST, {})])
        try:
            self.unlock(reason="exit_request")
        except DoorError as e:  # a callback thread has nobody to raise to
            log.error("door: exit request not served: %s", e)

    def _run(self) -> None:
        """Worker: sleeps until the next deadline (pulse end, held-open alarm), or until woken by a change."""
        while True:
            events: _Pending = []
            with self._wake:
                if self._closed:
                    return
                now = self._clock()
                if self._relock_at is not None and now >= self._relock_at:
                    try:
                        self._lock_now("pulse_end", events)
                    except Exception:
                        log.exception("door: relay on GPIO %d failed to re-lock", self.config.relay_pin)
                        self._relock_at = now + 0.5  # try again soon rather than leave it open
                if self._held_at is not None and now >= self._held_at:
                    self._held_at = None  # once per opening
                    events.append((DoorEvent.HELD_OPEN, {"seconds": self.config.held_open_seconds}))
                deadlines = [t for t in (self._relock_at, self._held_at) if t is not None]
                if not events:
                    self._wake.wait(None if not deadlines else max(0.0, min(deadlines) - now))
            self._emit(events)

    def _emit(self, events: _Pending) -> None:
        """Call on_event outside the lock; its exceptions are logged, never reach the door."""
        for event, info in events:
            log.info("door %s %s", event.value, info)
            if self._on_event is None:
                continue
            try:
                self._on_event(event, info)
            except Exception:
                log.exception("door: on_event failed for %s", event.value)
