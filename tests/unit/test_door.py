"""Door relay, contact, exit button and alarms on gpiozero's own MockFactory (no hardware, no mocks of ours)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from edge_app.errors import DoorError, EdgeAppError
from edge_app.hardware.door import Door, DoorConfig, DoorEvent

ROOT = Path(__file__).resolve().parents[2]
RELAY, CONTACT, BUTTON = 17, 22, 27
PULSE = 0.2  # the shortest pulse DoorConfig accepts
WAIT = 3.0  # upper bound for any wait; the tests normally take a fraction of it


class Recorder:
    """on_event sink that lets a test wait for an event instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[tuple[DoorEvent, dict[str, object]]] = []
        self._cond = threading.Condition()

    def __call__(self, event: DoorEvent, info: dict[str, object]) -> None:
        with self._cond:
            self.events.append((event, info))
            self._cond.notify_all()

    def wait_for(self, event: DoorEvent, count: int = 1, timeout: float = WAIT) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self.count(event) >= count, timeout)
        assert ok, f"no {event} within {timeout} s; got {self.kinds()}"

    def count(self, event: DoorEvent) -> int:
        return sum(1 for e, _ in self.events if e is event)

    def kinds(self) -> list[DoorEvent]:
        return [e for e, _ in self.events]

    def clear(self) -> None:
        with self._cond:
            self.events.clear()


class Clock:
    """time.monotonic plus an offset the test can push forward (to step past the grant window)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def make(factory: MockFactory, rec: Recorder) -> Iterator[Callable[..., Door]]:
    doors: list[Door] = []

    def _make(clock: Callable[[], float] = time.monotonic, **kw: object) -> Door:
        kw.setdefault("pulse_seconds", PULSE)
        door = Door(DoorConfig(**kw), pin_factory=factory, on_event=rec, clock=clock)
        doors.append(door)
        return door

    yield _make
    for d in doors:
        d.close()


def levels(pin: MockPin) -> list[bool]:
    return [bool(s.state) for s in pin.states]


# -- relay -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lock_type,active_high,locked_level", [
    ("fail_secure", True, False),  # strike: de-energised = locked
    ("fail_safe", True, True),  # maglock: energised = locked
    ("fail_secure", False, True),  # active-low relay board inverts the electrical level
    ("fail_safe", False, False),
])
def test_one_pulse_drives_the_relay_once(make, factory, rec, lock_type, active_high, locked_level):
    door = make(lock_type=lock_type, relay_active_high=active_high)
    pin = factory.pin(RELAY)
    assert pin.function == "output" and pin.state == locked_level and door.locked
    pin.clear_states()
    door.unlock()
    assert not door.locked and pin.state == (not locked_level)
    rec.wait_for(DoorEvent.LOCKED)
    assert door.locked
    expected = [locked_level, not locked_level, locked_level]
    assert levels(pin) == expected  # exactly one pulse (assert_states alone stops at the shorter list)
    pin.assert_states(expected)
    pin.assert_states_and_times([(0.0, locked_level), (0.0, not locked_level), (PULSE, locked_level)])
    assert rec.events[0] == (DoorEvent.UNLOCKED, {"reason": "grant", "seconds": PULSE})
    assert rec.events[1] == (DoorEvent.LOCKED, {"reason": "pulse_end"})


def test_second_unlock_extends_the_pulse_without_toggling(make, factory, rec):
    door = make()
    pin = factory.pin(RELAY)
    pin.clear_states()
    t0 = time.monotonic()
    door.unlock()
    time.sleep(0.1)
    door.unlock()  # now the pulse ends at ~0.3 s
    door.unlock(0.2)
    rec.wait_for(DoorEvent.LOCKED)
    elapsed = time.monotonic() - t0
    assert 0.28 <= elapsed < 1.0
    assert levels(pin) == [False, True, False]
    assert rec.kinds() == [DoorEvent.UNLOCKED, DoorEvent.LOCKED]


def test_a_shorter_unlock_does_not_shorten_the_pulse(make, factory, rec):
    door = make(pulse_seconds=0.5)
    door.unlock()
    t0 = time.monotonic()
    door.unlock(0.2)
    rec.wait_for(DoorEvent.LOCKED)
    assert time.monotonic() - t0 >= 0.45


def test_lock_cancels_the_pulse(make, factory, rec):
    door = make()
    door.unlock(30)
    door.lock()
    assert door.locked and factory.pin(RELAY).state is False
    time.sleep(PULSE)
    assert rec.kinds() == [DoorEvent.UNLOCKED, DoorEvent.LOCKED]
    assert rec.events[1][1] == {"reason": "lock"}


def test_close_during_a_pulse_locks_and_is_idempotent(make, factory, rec):
    door = make()
    pin = factory.pin(RELAY)
    pin.clear_states()
    door.unlock(30)
    door.close()
    assert door.locked and pin.state is False
    door.close()
    door.lock()  # harmless after close
    assert levels(pin) == [False, True, False]
    assert not any(t.name == "door-timer" for t in threading.enumerate())
    with pytest.raises(DoorError, match="closed") as ei:
        door.unlock()
    assert isinstance(ei.value, EdgeAppError) and isinstance(ei.value, RuntimeError)
    # the GPIO devices were released: the same pins can be claimed again
    again = make()
    again.unlock()
    assert pin.state is True


def test_exception_inside_with_leaves_the_relay_locked(factory):
    pin = factory.pin(RELAY)
    with pytest.raises(ZeroDivisionError), Door(DoorConfig(lock_type="fail_safe"), pin_factory=factory) as door:
        door.unlock(30)
        assert pin.state is False  # maglock released
        1 / 0  # noqa: B018
    assert door.locked and pin.state is True


def test_unlock_rejects_bad_seconds(make):
    door = make()
    for bad in (0, 0.1, 61, float("nan")):
        with pytest.raises(ValueError, match="seconds"):
            door.unlock(bad)
    assert door.locked


def test_concurrent_callers_leave_it_locked(make, factory):
    door = make()
    stop = time.monotonic() + 0.3

    def hammer(i: int) -> None:
        while time.monotonic() < stop:
            door.unlock(30) if i % 2 else door.lock()

    threads = [threading.Thread(target=hammer, args=(i,), name=f"hammer-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    door.close()
    assert door.locked and factory.pin(RELAY).state is False


# -- exit button and contact --------------------------------------------------------------------------------------

def test_exit_button_unlocks(make, factory, rec):
    door = make(exit_button_pin=BUTTON)
    button = factory.pin(BUTTON)
    button.drive_low()  # pressed (button to GND, pull-up)
    assert not door.locked and factory.pin(RELAY).state is True
    button.drive_high()
    assert rec.events[:2] == [(DoorEvent.EXIT_REQUEST, {}),
                              (DoorEvent.UNLOCKED, {"reason": "exit_request", "seconds": PULSE})]
    rec.wait_for(DoorEvent.LOCKED)
    assert door.locked


@pytest.mark.parametrize("normally_open", [False, True])
def test_contact_nc_and_no(make, factory, rec, normally_open):
    door = make(contact_pin=CONTACT, contact_normally_open=normally_open)
    contact = factory.pin(CONTACT)  # pull-up: reads high until something closes the circuit

    def set_door(is_open: bool) -> None:
        circuit_closed = is_open if normally_open else not is_open
        contact.drive_low() if circuit_closed else contact.drive_high()

    assert door.door_open is (not normally_open)  # open circuit: NC says open (cut wire), NO says closed
    set_door(False)
    assert door.door_open is False
    rec.clear()
    door.unlock()
    set_door(True)
    assert door.door_open is True
    set_door(False)
    assert rec.kinds() == [DoorEvent.UNLOCKED, DoorEvent.OPENED, DoorEvent.CLOSED]
    assert rec.events[1][1] == {"authorised": True}


def test_no_contact_means_unknown(make):
    assert make().door_open is None


# -- alarms -------------------------------------------------------------------------------------------------------

def closed_door(make: Callable[..., Door], factory: MockFactory, rec: Recorder, **kw: object) -> tuple[Door, MockPin]:
    door = make(contact_pin=CONTACT, **kw)
    contact = factory.pin(CONTACT)
    contact.drive_low()  # NC contact made: door closed
    rec.clear()
    return door, contact


def test_forced_open(make, factory, rec):
    door, contact = closed_door(make, factory, rec, held_open_seconds=0.1)
    contact.drive_high()
    assert rec.kinds() == [DoorEvent.OPENED, DoorEvent.FORCED_OPEN]
    assert rec.events[0][1] == {"authorised": False}
    time.sleep(0.2)
    assert rec.count(DoorEvent.HELD_OPEN) == 0  # forced already alarmed; no second alarm for the same opening
    assert door.locked


def test_opening_during_or_just_after_a_pulse_is_authorised(make, factory, rec):
    clock = Clock()
    door, contact = closed_door(make, factory, rec, clock=clock)
    door.unlock()
    contact.drive_high()  # during the pulse
    contact.drive_low()
    rec.wait_for(DoorEvent.LOCKED)
    contact.drive_high()  # just after the pulse: within the 1 s grace
    contact.drive_low()
    assert rec.count(DoorEvent.FORCED_OPEN) == 0
    clock.offset += 1.5  # past pulse + grace
    contact.drive_high()
    assert rec.count(DoorEvent.FORCED_OPEN) == 1


def test_lock_revokes_the_grant_after_the_grace(make, factory, rec):
    clock = Clock()
    door, contact = closed_door(make, factory, rec, clock=clock)
    door.unlock(30)
    door.lock()
    clock.offset += 1.5
    contact.drive_high()
    assert rec.count(DoorEvent.FORCED_OPEN) == 1


def test_held_open_alarm_once_per_opening(make, factory, rec):
    door, contact = closed_door(make, factory, rec, held_open_seconds=0.1)
    door.unlock()
    contact.drive_high()
    rec.wait_for(DoorEvent.HELD_OPEN)
    time.sleep(0.3)
    assert rec.count(DoorEvent.HELD_OPEN) == 1
    contact.drive_low()
    # a second authorised opening that closes in time raises nothing
    door.unlock()
    contact.drive_high()
    contact.drive_low()
    time.sleep(0.2)
    assert rec.count(DoorEvent.HELD_OPEN) == 1
    assert rec.count(DoorEvent.FORCED_OPEN) == 0


# -- config and callbacks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    ({"lock_type": "magnet"}, "lock_type .*'magnet'"),
    ({"pulse_seconds": 0}, "pulse_seconds .*got 0"),
    ({"pulse_seconds": 100}, "pulse_seconds .*got 100"),
    ({"held_open_seconds": -1}, "held_open_seconds .*got -1"),
    ({"held_open_seconds": 0}, "held_open_seconds"),
    ({"contact_pin": RELAY}, "contact_pin and relay_pin both use GPIO 17"),
    ({"contact_pin": 5, "exit_button_pin": 5}, "exit_button_pin and contact_pin both use GPIO 5"),
    ({"relay_pin": -1}, "relay_pin .*got -1"),
    ({"relay_pin": 54}, "relay_pin"),
    ({"relay_active_high": "yes"}, "relay_active_high"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        DoorConfig(**kw)


def test_on_event_errors_do_not_break_the_door(factory, rec, caplog):
    def angry(event: DoorEvent, info: dict[str, object]) -> None:
        rec(event, info)
        raise RuntimeError("subscriber down")

    with caplog.at_level(logging.ERROR, logger="edge_app.hardware.door"), \
            Door(DoorConfig(pulse_seconds=PULSE), pin_factory=factory, on_event=angry) as door:
        pin = factory.pin(RELAY)
        door.unlock()
        assert pin.state is True
        rec.wait_for(DoorEvent.LOCKED)  # the worker survived the raise in UNLOCKED and re-locked
        assert pin.state is False
        door.unlock()
        door.lock()
        assert pin.state is False
    assert "on_event failed" in caplog.text and "subscriber down" in caplog.text


# -- process exit -------------------------------------------------------------------------------------------------

def test_atexit_locks_the_relay(tmp_path):
    script = textwrap.dedent(f"""
        import atexit
        from gpiozero.pins.mock import MockFactory
        from edge_app.hardware.door import Door, DoorConfig

        factory = MockFactory()
        pin = factory.pin({RELAY})
        # registered before the Door: atexit runs last-in first-out, so this reports after the Door's hook ran
        atexit.register(lambda: print("at exit:", "unlocked" if pin.state else "locked", flush=True))
        door = Door(DoorConfig(relay_pin={RELAY}), pin_factory=factory)
        door.unlock(10)
        print("before exit:", "unlocked" if pin.state else "locked", flush=True)
    """)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30,
                         check=False)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["before exit: unlocked", "at exit: locked"], res.stderr
    assert elapsed < 8, "exit waited for the 10 s pulse: the relock timer must not hold the process"
