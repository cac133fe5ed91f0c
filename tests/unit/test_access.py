"""Access decisions: schedules and validity in the device time zone, voting across frames, cooldown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge_app.access.controller import AccessController
from edge_app.access.policy import AccessPolicy, PersonRule, Reason, parse_schedule
from edge_app.access.tracker import Observation, Tracker
from edge_app.errors import GalleryInputError

BERLIN = ZoneInfo("Europe/Berlin")
WORKDAYS = json.dumps([{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
                       {"days": ["sat"], "start": "22:00", "end": "02:00"}])


def at(text: str) -> datetime:
    """A wall-clock time in Berlin (the device zone), as an aware datetime in UTC like the daemon's clock."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(UTC)


@pytest.mark.parametrize("when,expected", [
    ("2026-11-23 08:00", Reason.GRANTED),  # Monday, window opens
    ("2026-11-23 17:59", Reason.GRANTED),
    ("2026-11-23 18:00", Reason.OUTSIDE_SCHEDULE),  # end is exclusive
    ("2026-11-23 07:59", Reason.OUTSIDE_SCHEDULE),
    ("2026-11-28 23:30", Reason.GRANTED),  # Saturday night window
    ("2026-11-29 01:30", Reason.GRANTED),  # ... past midnight, into Sunday
    ("2026-11-29 02:00", Reason.OUTSIDE_SCHEDULE),
    ("2026-11-29 12:00", Reason.OUTSIDE_SCHEDULE),  # Sunday
])
def test_weekly_windows_in_the_device_time_zone(when, expected):
    p = PersonRule(1, "Ana", schedule=WORKDAYS)
    assert AccessPolicy(BERLIN).decide(p, False, at(when)).reason is expected


def test_time_zone_matters():
    # 07:30 UTC on a Monday is 08:30 in Berlin (inside) but 02:30 in New York (outside).
    now = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
    p = PersonRule(1, "Ana", schedule=WORKDAYS)
    assert AccessPolicy(BERLIN).decide(p, False, now).granted
    assert AccessPolicy(ZoneInfo("America/New_York")).decide(p, False, now).reason is Reason.OUTSIDE_SCHEDULE


def test_validity_period_and_active_flag():
    pol = AccessPolicy(BERLIN)
    p = PersonRule(1, "Ana", valid_from="2026-11-01", valid_until="2026-11-30")
    assert pol.decide(p, None, at("2026-10-31 23:59")).reason is Reason.NOT_YET_VALID
    assert pol.decide(p, None, at("2026-11-01 00:00")).granted
    assert pol.decide(p, None, at("2026-11-30 23:59")).granted  # a bare end date includes its day
    assert pol.decide(p, None, at("2026-12-01 00:00")).reason is Reason.EXPIRED
    timed = PersonRule(2, "Bo", valid_until="2026-11-30T12:00:00+00:00")
    assert pol.decide(timed, None, datetime(2026, 11, 30, 12, 0, tzinfo=UTC)).reason is Reason.EXPIRED
    assert pol.decide(PersonRule(3, "Cy", active=False), None, at("2026-11-23 10:00")).reason is Reason.INACTIVE
    assert pol.decide(None, None, at("2026-11-23 10:00")).reason is Reason.UNKNOWN


def test_require_mask():
    pol = AccessPolicy(BERLIN, require_mask=True)
    p = PersonRule(1, "Ana")
    assert pol.decide(p, False, at("2026-11-23 10:00")).reason is Reason.NO_MASK
    assert pol.decide(p, None, at("2026-11-23 10:00")).reason is Reason.NO_MASK  # unknown mask status: refuse
    assert pol.decide(p, True, at("2026-11-23 10:00")).granted


@pytest.mark.parametrize("schedule,message", [
    ('{"mon": "08:00"}', "must be a list"),
    ('[{"days": ["mon"], "start": "8am", "end": "18:00"}]', 'window 0 start: not a time like "08:00"'),
    ('[{"days": ["monday", "funday"], "start": "08:00", "end": "18:00"}]', r"unknown day\(s\) \['funday'\]"),
    ('[{"days": [], "start": "08:00", "end": "18:00"}]', "window 0 days"),
    ('[{"days": ["mon"], "start": "08:00", "end": "08:00"}]', "empty window"),
    ('[{"days": ["mon"], "start": "08:00", "end": "18:00", "tz": "UTC"}]', r"unknown field\(s\) \['tz'\]"),
])
def test_bad_schedules_are_named(schedule, message):
    with pytest.raises(GalleryInputError, match=message):
        parse_schedule(schedule)


def test_a_broken_schedule_refuses_rather_than_opens(caplog):
    p = PersonRule(1, "Ana", schedule='[{"days": ["mon"], "start": "x", "end": "y"}]')
    assert AccessPolicy(BERLIN).decide(p, None, at("2026-11-23 10:00")).reason is Reason.OUTSIDE_SCHEDULE
    assert "unusable schedule" in caplog.text


BOX = (100.0, 100.0, 200.0, 200.0)


def obs(person, box=BOX, ok=True, masked=False, score=0.8):  # type: ignore[no-untyped-def]
    return Observation(box, person, score, masked, ok)


def shift(box, dx):  # type: ignore[no-untyped-def]
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def test_grant_needs_n_of_m_agreeing_frames():
    tr = Tracker(votes=3, window=5)
    assert tr.update([obs(7)]) == []
    assert tr.update([obs(None, shift(BOX, 5))]) == []  # one frame unsure
    assert tr.update([obs(7, shift(BOX, 10))]) == []
    votes = tr.update([obs(7, shift(BOX, 15), masked=True)])
    assert len(votes) == 1 and votes[0].person_id == 7 and votes[0].frames == 4
    assert tr.update([obs(7, shift(BOX, 20))]) == []  # a track decides once


def test_low_quality_frames_do_not_count_and_unknown_after_m_frames():
    tr = Tracker(votes=3, window=5)
    for _ in range(4):
        assert tr.update([obs(7, ok=False)]) == []  # a match on a blurred face counts for nothing
    tr = Tracker(votes=3, window=5)
    # Five usable frames, person 8 in only two of them (three needed): an unknown face, decided once.
    results = [tr.update([obs(8 if i in (0, 2) else None, score=0.4 + i / 100)]) for i in range(5)]
    assert results[:4] == [[], [], [], []]
    assert results[4][0].person_id is None and results[4][0].score == pytest.approx(0.44)
    assert tr.update([obs(None)]) == []


def test_two_faces_are_two_tracks_and_a_lost_track_starts_over():
    tr = Tracker(votes=2, window=3, max_missed=1)
    left, right = BOX, (400.0, 100.0, 500.0, 200.0)
    tr.update([obs(1, left), obs(2, right)])
    votes = tr.update([obs(2, right), obs(1, left)])  # order in the frame does not matter
    assert sorted(v.person_id for v in votes) == [1, 2]
    tr.update([])
    tr.update([])  # missed twice > max_missed: gone
    assert tr.tracks == []
    assert tr.update([obs(1, left)]) == []  # a new track must vote again
    assert [v.person_id for v in tr.update([obs(1, left)])] == [1]


def test_a_decided_track_votes_again_only_for_another_known_person():
    tr = Tracker(votes=2, window=3)
    tr.update([obs(1)])
    assert [v.person_id for v in tr.update([obs(1)])] == [1]
    for _ in range(5):  # the same person turns away: unknown frames never turn into a deny
        assert tr.update([obs(None)]) == []
    tr.update([obs(2)])
    assert [v.person_id for v in tr.update([obs(2)])] == [2]  # somebody else stepped into the place
    tr = Tracker(votes=2, window=3)
    assert [v.person_id for v in [*tr.update([obs(None)]), *tr.update([obs(None)]), *tr.update([obs(None)])]] == [None]
    tr.update([obs(5)])
    assert [v.person_id for v in tr.update([obs(5)])] == [5]  # an unknown face turned to the camera


def test_a_gap_between_frames_ends_every_track_so_old_votes_never_count():
    """Two frames before the camera stalls (or is lost) and one after must not make three votes."""
    tr = Tracker(votes=3, window=5, max_gap_s=1.0)
    assert tr.update([obs(7)], 10.0) == [] and tr.update([obs(7)], 10.1) == []
    assert tr.update([obs(7)], 12.0) == []  # 1.9 s later: a new track, one vote
    assert tr.update([obs(7)], 12.1) == []
    assert [v.person_id for v in tr.update([obs(7)], 12.2)] == [7]  # three consecutive frames
    tr = Tracker(votes=3, window=5, max_gap_s=1.0)
    tr.update([obs(7)], 5.0)
    tr.update([obs(7)], 5.1)
    assert tr.update([obs(7)], 1.0) == []  # time ran backwards (a video restarted): start again too
    tr = Tracker(votes=3, window=5, max_gap_s=1.0)
    assert [v for t in (0.0, 0.9, 1.8) for v in tr.update([obs(7)], t)] != []  # gaps within the limit
    tr = Tracker(votes=3, window=5)  # no limit set: times are not looked at
    assert [v for t in (0.0, 5.0, 50.0) for v in tr.update([obs(7)], t)] != []


def test_tracker_rejects_bad_settings():
    with pytest.raises(ValueError, match="votes must be in 1..window"):
        Tracker(votes=6, window=5)
    with pytest.raises(ValueError, match="min_iou"):
        Tracker(min_iou=0)
    with pytest.raises(ValueError, match="max_gap_s"):
        Tracker(max_gap_s=0)


def test_controller_applies_policy_and_cooldown():
    clock = [0.0]
    persons = {7: PersonRule(7, "Ana"), 9: PersonRule(9, "Bo", active=False)}
    ctl = AccessController(AccessPolicy(BERLIN), Tracker(votes=2, window=3), persons, cooldown_s=10,
                           clock=lambda: clock[0])
    now = at("2026-11-23 10:00")
    from edge_app.access.tracker import Vote

    first = ctl.decide([Vote(1, 7, 0.8, False, 2)], now)
    assert [(d.granted, d.reason, d.person_name) for d in first] == [(True, Reason.GRANTED, "Ana")]
    assert len(first[0].id) == 36 and first[0].at == now
    clock[0] = 5.0
    assert ctl.decide([Vote(2, 7, 0.8, False, 2)], now) == []  # same person again within the cooldown
    clock[0] = 11.0
    assert ctl.decide([Vote(3, 7, 0.8, False, 2)], now)[0].granted
    denied = ctl.decide([Vote(4, 9, 0.9, False, 2), Vote(5, None, 0.3, None, 3)], now)
    assert [(d.granted, d.reason) for d in denied] == [(False, Reason.INACTIVE), (False, Reason.UNKNOWN)]
    ctl.set_persons({})
    gone = ctl.decide([Vote(6, 7, 0.8, False, 2)], now + timedelta(minutes=5))
    assert [(d.granted, d.reason) for d in gone] == [(False, Reason.UNKNOWN)]


def test_real_faces_through_recognizer_tracker_and_policy(pipeline, model_set, rgb, tmp_path):
    """Frames of an enrolled person are granted after the vote; a stranger is denied once after M frames."""
    import numpy as np

    from edge_app.gallery.matcher import Matcher
    from edge_app.gallery.store import Gallery
    from edge_app.recognizer import RecognitionPolicy, Recognizer
    from tests.conftest import kiosk_frame

    with Gallery(tmp_path / "g.db") as g:
        pid = g.add_person("Obama").id
        e = pipeline.process(rgb("obama.jpg"), max_faces=1)[0].embedding
        g.add_templates("Obama", e[None], model_sha=model_set.embedder_sha, masked=False)
        matcher = Matcher.from_gallery(g, model_set.embedder_sha)
    rec = Recognizer(pipeline, matcher, RecognitionPolicy.from_thresholds(model_set.thresholds()))
    ctl = AccessController(AccessPolicy(BERLIN), Tracker(votes=3, window=5), {pid: PersonRule(pid, "Obama")})
    now = at("2026-11-23 10:00")

    def walk_up(photo):  # type: ignore[no-untyped-def]
        img = rgb(photo)
        box = pipeline.detector.detect(img)[0].box
        return [kiosk_frame(img, box, face_fraction=0.30 + 0.01 * i) for i in range(8)]

    decisions = []
    for i, frame in enumerate(walk_up("obama2.jpg")):
        for d in ctl.observe(rec.recognize(frame), now):
            decisions.append((i, d))
    assert [(i, d.granted, d.person_name) for i, d in decisions] == [(2, True, "Obama")]  # third frame
    assert isinstance(decisions[0][1].score, float) and decisions[0][1].masked is False
    for _ in range(6):  # Obama walks through; nobody in view for a moment
        assert ctl.observe([], now) == []
    stranger = [(i, d) for i, frame in enumerate(walk_up("biden.jpg")) for d in ctl.observe(rec.recognize(frame), now)]
    assert [(i, d.granted, d.reason) for i, d in stranger] == [(4, False, Reason.UNKNOWN)]
    assert np.isfinite(stranger[0][1].score)


def test_time_rules_are_not_applied_on_a_clock_known_to_be_unsynchronised():
    """A Pi boots with the time it last saved: someone who expired while it was off must not be let in."""
    expired = PersonRule(1, "Ana", valid_until="2026-11-01")
    scheduled = PersonRule(2, "Bo", schedule=WORKDAYS)
    starting = PersonRule(3, "Cy", valid_from="2026-11-01")
    plain = PersonRule(4, "Di")
    now = at("2026-10-26 09:00")  # the saved clock: a Monday before Ana's end date
    state: list[bool | None] = [False]
    policy = AccessPolicy(BERLIN, clock_synced=lambda: state[0])
    assert [policy.decide(p, False, now).reason for p in (expired, scheduled, starting, plain)] == [
        Reason.CLOCK_NOT_SYNCED] * 3 + [Reason.GRANTED]
    state[0] = True  # synchronised: the rules apply (the clock is now trusted)
    assert [policy.decide(p, False, now).reason for p in (expired, scheduled, starting)] == [
        Reason.GRANTED, Reason.GRANTED, Reason.NOT_YET_VALID]
    state[0] = None  # cannot tell (no systemd): applied on the clock as it is
    assert policy.decide(expired, False, now).reason is Reason.GRANTED
    assert AccessPolicy(BERLIN).decide(expired, False, now).reason is Reason.GRANTED  # not asked at all
    assert policy.decide(PersonRule(5, "Ed", active=False, valid_until="2026-11-01"), False, now).reason is \
        Reason.INACTIVE  # inactive stays the first reason


def test_the_daemon_asks_the_clock_only_when_required(monkeypatch):
    from edge_app import daemon
    from edge_app.clock import ClockStatus, ClockSync
    from edge_app.config import parse_config

    asked: list[int] = []

    def probe() -> ClockStatus:
        asked.append(1)
        return ClockStatus(False, "NOT synchronised (test)")

    monkeypatch.setattr(daemon, "ClockSync", lambda **kw: ClockSync(probe, **kw))
    assert daemon.clock_check(parse_config("[device]\nrequire_clock_sync = false\n")) is None and asked == []
    check = daemon.clock_check(parse_config(""))  # the default: required
    assert check is not None and check() is False and asked == [1]
    assert check() is False and asked == [1]  # cached: no timedatectl per decision
