"""Recognitions of each frame -> access decisions: tracker votes, then the policy, then the
per-person spoof hold (no grant shortly after a spoof of that person was refused) and cooldown (someone
standing in front of the door is granted once, not every second)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_app.access.policy import AccessPolicy, PersonRule, Reason, Verdict
from edge_app.access.tracker import Observation, Tracker, Vote
from edge_app.recognizer import Recognition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccessDecision:
    id: str  # UUID, also the event row's id
    at: datetime  # aware
    granted: bool
    reason: Reason
    person_id: int | None
    person_name: str | None
    score: float | None
    masked: bool | None
    track_id: int
    frames: int  # frames the face was seen before the decision
    live: bool | None = None  # None: liveness not checked

    def details(self) -> dict[str, Any]:
        d: dict[str, Any] = {"track": self.track_id, "frames": self.frames}
        if self.live is not None:
            d["live"] = self.live
        return d


def observation(r: Recognition) -> Observation:
    m = r.match
    return Observation(r.face.detection.box, m.person_id if (m is not None and r.known) else None,
                       None if m is None else m.score, r.face.masked, r.face.quality.passed, r.live,
                       r.face.detection.keypoints)


class AccessController:
    def __init__(self, policy: AccessPolicy, tracker: Tracker, persons: Mapping[int, PersonRule],
                 cooldown_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 spoof_hold_s: float = 0.0) -> None:
        if cooldown_s < 0 or spoof_hold_s < 0:
            raise ValueError(f"cooldown_s and spoof_hold_s must be >= 0, got {cooldown_s}, {spoof_hold_s}")
        self.policy, self.tracker, self.cooldown_s, self.clock = policy, tracker, cooldown_s, clock
        self.spoof_hold_s = spoof_hold_s
        self.persons: Mapping[int, PersonRule] = dict(persons)
        self._granted_at: dict[int, float] = {}
        self._spoofed_at: dict[int, float] = {}

    def set_persons(self, persons: Mapping[int, PersonRule]) -> None:
        """After a gallery reload: decisions from now on use the new rules."""
        self.persons = dict(persons)

    def observe(self, recognitions: Iterable[Recognition], now: datetime,
                at: float | None = None) -> list[AccessDecision]:
        """One frame's recognitions; ``at`` is the frame's time in seconds (see Tracker.update)."""
        return self.decide(self.tracker.update([observation(r) for r in recognitions], at), now)

    def decide(self, votes: Iterable[Vote], now: datetime) -> list[AccessDecision]:
        out = []
        for v in votes:
            person = self.persons.get(v.person_id) if v.person_id is not None else None
            if v.person_id is not None and person is None:
                log.warning("track %d matched person id %d, who is no longer in the gallery", v.track_id, v.person_id)
            if person is not None and v.live is False:
                verdict = Verdict(False, Reason.SPOOF)  # before schedules: a photo is refused whoever it shows
                if self.spoof_hold_s > 0:
                    self._spoofed_at[person.person_id] = self.clock()
            else:
                verdict = self.policy.decide(person, v.masked, now)
            if verdict.granted and person is not None:
                t = self.clock()
                spoofed = self._spoofed_at.get(person.person_id)
                if spoofed is not None and t - spoofed < self.spoof_hold_s:
                    log.warning("%s: live and recognised, refused: a spoof of this person was refused %.1f s ago",
                                person.name, t - spoofed)
                    verdict = Verdict(False, Reason.SPOOF_HOLD)
            if verdict.granted and person is not None:
                last = self._granted_at.get(person.person_id)
                if last is not None and t - last < self.cooldown_s:
                    log.debug("%s granted %.1f s ago: cooldown, no new decision", person.name, t - last)
                    continue
                self._granted_at[person.person_id] = t
            out.append(AccessDecision(str(uuid.uuid4()), now, verdict.granted, verdict.reason,
                                      v.person_id, person.name if person else None, v.score, v.masked,
                                      v.track_id, v.frames, v.live))
        return out
