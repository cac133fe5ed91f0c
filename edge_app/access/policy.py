"""Who may enter when: person active, validity period, weekly time windows, mask rule.

Times are judged in the device's time zone (config), because "Monday 08:00-18:00" means the
building's clock, not UTC. A bare ``valid_until`` date includes that whole day.

Schedule (the person's ``schedule`` JSON in the gallery): a list of weekly windows
    [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
     {"days": ["sat"], "start": "22:00", "end": "02:00"}]       # past midnight: belongs to its start day
No schedule (null or []) means at any time.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from edge_app.errors import GalleryInputError

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Reason(enum.Enum):
    """Reason code of an access decision; stored with every event."""

    GRANTED = "granted"
    UNKNOWN = "unknown_face"
    INACTIVE = "inactive"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    OUTSIDE_SCHEDULE = "outside_schedule"
    NO_MASK = "no_mask"
    SPOOF = "spoof"  # recognised, but not judged live: a photo or a screen held to the camera
    # Recognised and live, but a spoof of this person was refused less than [liveness] hold_seconds ago: an attacker
    # who is refused does not get to try again at once (a replay passes some windows; docs/liveness.md).
    SPOOF_HOLD = "spoof_hold"
    CLOCK_NOT_SYNCED = "clock_not_synced"  # the person has time rules and the clock is known to be unsynchronised


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time  # end <= start: the window runs past midnight into the next day

    def contains(self, local: datetime) -> bool:
        t, day = local.time(), local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        # Past midnight: the evening part on the start day, the morning part on the day after.
        return (day in self.days and t >= self.start) or ((day - 1) % 7 in self.days and t < self.end)


def _clock(text: Any, where: str) -> time:
    if not isinstance(text, str):
        raise GalleryInputError(f"schedule {where}: expected a time like \"08:00\", got {text!r}")
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise GalleryInputError(f"schedule {where}: not a time like \"08:00\": {text!r}") from None


def parse_schedule(schedule: str | Sequence[Any] | None) -> list[Window]:
    """The JSON schedule -> windows; GalleryInputError naming the window and field that is wrong."""
    if schedule is None:
        return []
    data = json.loads(schedule) if isinstance(schedule, str) else schedule
    if data is None:
        return []
    if not isinstance(data, list):
        raise GalleryInputError(f"schedule must be a list of windows, got {type(data).__name__}")
    out = []
    for i, w in enumerate(data):
        where = f"window {i}"
        if not isinstance(w, dict):
            raise GalleryInputError(f"schedule {where}: expected an object with days, start, end; got {w!r}")
        unknown = set(w) - {"days", "start", "end"}
        if unknown:
            raise GalleryInputError(f"schedule {where}: unknown field(s) {sorted(unknown)}")
        days = w.get("days")
        if not isinstance(days, list) or not days or not all(isinstance(d, str) for d in days):
            raise GalleryInputError(f"schedule {where} days: expected a list like [\"mon\", \"tue\"], got {days!r}")
        bad = [d for d in days if d.lower()[:3] not in DAYS]
        if bad:
            raise GalleryInputError(f"schedule {where} days: unknown day(s) {bad}; use {', '.join(DAYS)}")
        start, end = _clock(w.get("start"), f"{where} start"), _clock(w.get("end"), f"{where} end")
        if start == end:
            raise GalleryInputError(f"schedule {where}: start and end are both {start}; an empty window")
        out.append(Window(frozenset(DAYS.index(d.lower()[:3]) for d in days), start, end))
    return out


def _bound(value: str | None, tz: tzinfo, end_of_day: bool) -> datetime | None:
    """ISO date or date-time -> aware datetime in the device zone; a bare date is the day's start or end."""
    if not value:
        return None
    if len(value) == 10:  # a bare date
        d = date.fromisoformat(value)
        base = datetime.combine(d, time.min, tzinfo=tz)
        return base + timedelta(days=1) if end_of_day else base
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


@dataclass(frozen=True)
class PersonRule:
    """What the policy needs to know of a person (from the gallery's Person row)."""

    person_id: int
    name: str
    active: bool = True
    valid_from: str | None = None
    valid_until: str | None = None
    schedule: str | None = None


@dataclass(frozen=True)
class Verdict:
    granted: bool
    reason: Reason


class AccessPolicy:
    """``clock_synced``: asked before a person's time rules are applied; True / None (cannot tell) trust
    the clock, False refuses everyone with a validity window or schedule (a Pi has no RTC and boots with the
    time it last saved: someone who expired while it was off would be let in)."""

    def __init__(self, tz: tzinfo, require_mask: bool = False,
                 clock_synced: Callable[[], bool | None] | None = None) -> None:
        self.tz = tz
        self.require_mask = require_mask
        self.clock_synced = clock_synced
        self._windows: dict[tuple[int, str | None], list[Window]] = {}

    def windows(self, person: PersonRule) -> list[Window]:
        key = (person.person_id, person.schedule)
        if key not in self._windows:
            try:
                self._windows[key] = parse_schedule(person.schedule)
            except (GalleryInputError, ValueError) as exc:
                # A broken schedule must not open the door at all hours: no window at all.
                log.error("person %r has an unusable schedule (%s); access refused until it is fixed",
                          person.name, exc)
                self._windows[key] = [Window(frozenset(), time.min, time.max)]
        return self._windows[key]

    def decide(self, person: PersonRule | None, masked: bool | None, now: datetime) -> Verdict:
        """The decision for a recognised person (None: nobody in the gallery) at ``now`` (aware)."""
        if person is None:
            return Verdict(False, Reason.UNKNOWN)
        if not person.active:
            return Verdict(False, Reason.INACTIVE)
        timed = person.valid_from is not None or person.valid_until is not None or person.schedule is not None
        if timed and self.clock_synced is not None and self.clock_synced() is False:
            return Verdict(False, Reason.CLOCK_NOT_SYNCED)
        local = now.astimezone(self.tz)
        start = _bound(person.valid_from, self.tz, end_of_day=False)
        if start is not None and local < start:
            return Verdict(False, Reason.NOT_YET_VALID)
        end = _bound(person.valid_until, self.tz, end_of_day=True)
        if end is not None and local >= end:
            return Verdict(False, Reason.EXPIRED)
        windows = self.windows(person)
        if windows and not any(w.contains(local) for w in windows):
            return Verdict(False, Reason.OUTSIDE_SCHEDULE)
        if self.require_mask and not masked:
            return Verdict(False, Reason.NO_MASK)
        return Verdict(True, Reason.GRANTED)
