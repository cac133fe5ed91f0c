"""Follow faces across frames and vote, so one good frame never opens the door and one bad
frame never denies it.

A track is a face seen in consecutive frames (boxes overlapping by IoU). Each frame adds an
observation: who the face looked like (or nobody), with its score, mask status and quality.
A track decides once:
  - match:   N of its last M observations agree on one person, each above threshold with the
             quality gates passed;
  - unknown: M observations with the gates passed and no person reaching N votes.
Faces that never pass the gates never decide (the door waits for a usable view).
With liveness on, a match also needs the face judged live in ``live_votes`` of the observations that agree
on that person (and, with the motion cue, those observations' keypoints must not move as one plane): a live
stranger's frames in the same track never vouch for a photo of someone enrolled; short of that the
track waits for more frames while its window is not full, then decides with ``live`` False (spoof). A decided track
whose face then matches another enrolled person for N usable frames in a row (one person stepping
into the place of another, or an unknown face that turns to the camera) votes again.
A vote is made of consecutive frames: when more than ``max_gap_s`` pass between two frames (the camera was
lost or stalled, frames were dropped as frozen), every track ends and voting starts again.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Observation:
    box: Box
    person_id: int | None  # None: below threshold or no match
    score: float | None
    masked: bool | None
    quality_ok: bool
    live: bool | None = None  # p(live) >= threshold; None: not checked
    keypoints: Any = None  # the detector's keypoints (K, 2), for the motion cue


@dataclass(frozen=True)
class Vote:
    """A track's decision: ``person_id`` None means an unknown face."""

    track_id: int
    person_id: int | None
    score: float | None  # mean score of the agreeing observations (best candidate's for unknown)
    masked: bool | None  # majority mask status of the counted observations
    frames: int  # observations the track had when it decided
    live: bool | None = None  # judged live (None: liveness off); False on a match means refused as a spoof


@dataclass
class Track:
    id: int
    box: Box
    history: deque[Observation]
    missed: int = 0
    decided: bool = False
    decided_person: int | None = None
    disagree: int = 0  # usable observations in a row that contradict the decision
    seen: int = field(default=0)


def iou(a: Box, b: Box) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    def __init__(self, votes: int = 3, window: int = 5, min_iou: float = 0.3, max_missed: int = 5,
                 live_votes: int | None = None,
                 planar_residual: Callable[[Sequence[Any]], float | None] | None = None,
                 min_residual: float = 0.0, max_gap_s: float | None = None) -> None:
        if not 1 <= votes <= window:
            raise ValueError(f"votes must be in 1..window ({window}), got {votes}")
        if live_votes is not None and not 1 <= live_votes <= window:
            raise ValueError(f"live votes must be in 1..window ({window}), got {live_votes}")
        # None: liveness is not judged. The motion cue (a function of the keypoints over the window) is
        # separate so either can be used alone.
        self.live_votes, self.planar_residual, self.min_residual = live_votes, planar_residual, min_residual
        if not 0.0 < min_iou < 1.0:
            raise ValueError(f"min_iou must be in (0, 1), got {min_iou}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if max_gap_s is not None and not max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0 seconds (None: no limit), got {max_gap_s}")
        self.votes, self.window, self.min_iou, self.max_missed = votes, window, min_iou, max_missed
        self.max_gap_s = max_gap_s
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._last_t: float | None = None

    def update(self, observations: list[Observation], at: float | None = None) -> list[Vote]:
        """One frame's faces -> the decisions this frame completes (at most one per track, ever).

        ``at``: the frame's time in seconds (capture time or position in a video); with ``max_gap_s``, a gap
        longer than that since the previous frame (or time running backwards) ends every track first."""
        if at is not None:
            if self.max_gap_s is not None and self._last_t is not None and not (
                    0 <= at - self._last_t <= self.max_gap_s) and self.tracks:
                log.info("%.2f s between frames (limit %.2f s): %d track(s) end, votes start again",
                         at - self._last_t, self.max_gap_s, len(self.tracks))
                self.tracks = []
            self._last_t = at
        pairs = sorted(((iou(t.box, o.box), ti, oi) for ti, t in enumerate(self.tracks)
                        for oi, o in enumerate(observations)), reverse=True)
        used_t: set[int] = set()
        used_o: set[int] = set()
        for overlap, ti, oi in pairs:  # greedy: the best overlaps first
            if overlap < self.min_iou:
                break
            if ti in used_t or oi in used_o:
                continue
            used_t.add(ti)
            used_o.add(oi)
            self._add(self.tracks[ti], observations[oi])
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for oi, o in enumerate(observations):
            if oi not in used_o:
                t = Track(next(self._ids), o.box, deque(maxlen=self.window))
                self._add(t, o)
                self.tracks.append(t)
        votes = []
        for t in self.tracks:
            if not t.decided and t.missed == 0:
                v = self._decide(t)
                if v is not None:
                    t.decided, t.decided_person, t.disagree = True, v.person_id, 0
                    votes.append(v)
        return votes

    def _add(self, track: Track, obs: Observation) -> None:
        track.box = obs.box
        track.history.append(obs)
        track.missed = 0
        track.seen += 1
        if track.decided and obs.quality_ok:
            # Only a confident other identity contradicts a decision: an enrolled person who lingers
            # and turns away (unknown frames) must not earn a deny event.
            other = obs.person_id is not None and obs.person_id != track.decided_person
            track.disagree = track.disagree + 1 if other else 0
            if track.disagree >= self.votes:
                recent = list(track.history)[-self.votes:]
                track.history.clear()
                track.history.extend(recent)
                track.decided, track.disagree = False, 0

    def _decide(self, t: Track) -> Vote | None:
        usable = [o for o in t.history if o.quality_ok]
        known = Counter(o.person_id for o in usable if o.person_id is not None)
        if known:
            pid, n = known.most_common(1)[0]
            if n >= self.votes:
                agree = [o for o in usable if o.person_id == pid]
                # Judged on the frames that recognise the person only: another face's live frames in the
                # same track (a stranger who then holds up a photo) must not count for this one.
                live = self._live(agree)
                if live is False and len(t.history) < self.window:
                    return None  # not live yet: more frames may still show a live face
                scores = [o.score for o in agree if o.score is not None]
                return Vote(t.id, pid, sum(scores) / len(scores) if scores else None, _majority(agree), t.seen,
                            live)
        if len(usable) >= self.window:
            scores = [o.score for o in usable if o.score is not None]
            return Vote(t.id, None, max(scores) if scores else None, _majority(usable), t.seen, self._live(usable))
        return None

    def _live(self, obs: list[Observation]) -> bool | None:
        if self.live_votes is None and self.planar_residual is None:
            return None
        if self.live_votes is not None and sum(o.live is True for o in obs) < self.live_votes:
            return False
        if self.planar_residual is not None:
            residual = self.planar_residual([o.keypoints for o in obs if o.keypoints is not None])
            if residual is None or residual < self.min_residual:
                return False  # moved as one plane (or too few frames to tell)
        return True


def _majority(obs: list[Observation]) -> bool | None:
    flags = [o.masked for o in obs if o.masked is not None]
    return None if not flags else sum(flags) * 2 > len(flags)
