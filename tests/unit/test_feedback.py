"""LEDs and buzzer at the door on gpiozero's MockFactory: one pattern per outcome, never the relay pin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from edge_app.config import FeedbackConfig, parse_config
from edge_app.errors import ConfigError
from edge_app.hardware.feedback import GRANTED, NO_MASK, REFUSED, SPOOF, Feedback, pattern_for

GREEN, RED, BLUE, BUZZER = 5, 6, 12, 13
WAIT = 10.0  # upper bound for a pattern to end; they take a fraction of it


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


def levels(pin: MockPin) -> list[bool]:
    """Every level the pin went through, in order (gpiozero's assert_states ignores extra ones)."""
    return [bool(s.state) for s in pin.states]


def shown(factory: MockFactory, outcome: str, **kw: object) -> dict[int, list[bool]]:
    cfg = FeedbackConfig(**{"green_pin": GREEN, "red_pin": RED, "buzzer_pin": BUZZER, "show_seconds": 0.2, **kw})
    fb = Feedback(cfg, factory)
    try:
        fb.show(outcome)
        fb.wait(WAIT)
        return {p: levels(factory.pin(p)) for p in cfg.pins.values()}
    finally:
        fb.close()


def test_granted_is_green_and_one_beep(factory: MockFactory) -> None:
    pins = shown(factory, GRANTED)
    assert pins[GREEN] == [False, True, False]
    assert pins[RED] == [False]
    assert pins[BUZZER] == [False, True, False]


def test_refused_is_red_and_two_beeps(factory: MockFactory) -> None:
    pins = shown(factory, REFUSED)
    assert pins[RED] == [False, True, False]
    assert pins[GREEN] == [False]
    assert pins[BUZZER] == [False, True, False, True, False]


def test_no_mask_blinks_red_and_beeps_three_times(factory: MockFactory) -> None:
    pins = shown(factory, NO_MASK, show_seconds=1.0)  # 0.25 s half-period: two flashes
    assert pins[RED] == [False, True, False, True, False]
    assert pins[GREEN] == [False]
    assert pins[BUZZER] == [False] + [True, False] * 3


def test_spoof_flashes_red_with_one_long_beep(factory: MockFactory) -> None:
    pins = shown(factory, SPOOF)
    assert pins[RED][:5] == [False, True, False, True, False] and pins[RED][-1] is False
    assert pins[GREEN] == [False]
    buzzer = factory.pin(BUZZER).states
    assert [bool(s.state) for s in buzzer] == [False, True, False]
    assert buzzer[2].timestamp >= 0.7  # the time spent on: the long beep (0.8 s), not a short 0.1 s one


def test_every_outcome_has_its_own_pattern(factory: MockFactory) -> None:
    seen = {o: tuple(tuple(v) for v in shown(factory, o, show_seconds=1.0).values())
            for o in (GRANTED, REFUSED, NO_MASK, SPOOF)}
    assert len(set(seen.values())) == 4


def test_rgb_led_colours(factory: MockFactory) -> None:
    def lit(outcome: str) -> tuple[bool, bool, bool]:
        cfg = FeedbackConfig(red_pin=RED, green_pin=GREEN, blue_pin=BLUE, rgb=True, show_seconds=5.0)
        fb = Feedback(cfg, factory)
        try:
            fb.show(outcome)
            # show() returned while the 5 s pattern runs: the colour is on now.
            return tuple(factory.pin(p).state for p in (RED, GREEN, BLUE))  # type: ignore[return-value]
        finally:
            fb.close()
            factory.reset()

    assert lit(GRANTED) == (False, True, False)
    assert lit(REFUSED) == (True, False, False)
    assert lit(NO_MASK) == (True, True, False)  # amber
    assert lit(SPOOF) == (True, False, True)  # magenta


def test_show_returns_at_once_and_a_newer_outcome_replaces_the_pattern(factory: MockFactory) -> None:
    fb = Feedback(FeedbackConfig(green_pin=GREEN, red_pin=RED, show_seconds=5.0), factory)
    try:
        fb.show(REFUSED)
        assert factory.pin(RED).state  # still lit: show() did not wait the 5 s out
        fb.show(GRANTED)
        assert not factory.pin(RED).state and factory.pin(GREEN).state
    finally:
        fb.close()


def test_only_the_fitted_outputs_are_driven(factory: MockFactory) -> None:
    fb = Feedback(FeedbackConfig(buzzer_pin=BUZZER, show_seconds=0.2), factory)
    try:
        fb.show(REFUSED)
        fb.wait(WAIT)
    finally:
        fb.close()
    assert levels(factory.pin(BUZZER)) == [False, True, False, True, False]


def test_reasons_map_to_patterns() -> None:
    assert pattern_for("granted") == GRANTED and pattern_for("no_mask") == NO_MASK and pattern_for("spoof") == SPOOF
    for reason in ("unknown_face", "inactive", "expired", "not_yet_valid", "outside_schedule", "low_quality"):
        assert pattern_for(reason) == REFUSED


@pytest.mark.parametrize(("text", "message"), [
    ("[feedback]\ngreen_pin = 17\n", "[feedback] green_pin: GPIO 17 is [door] relay_pin; feedback outputs never"),
    ("[door]\nrelay_pin = 4\n[feedback]\nbuzzer_pin = 4\n", "[feedback] buzzer_pin: GPIO 4 is [door] relay_pin"),
    ("[door]\ncontact_pin = 27\n[feedback]\nred_pin = 27\n", "[feedback] red_pin: GPIO 27 is [door] contact_pin"),
    ("[feedback]\ngreen_pin = 5\nred_pin = 5\n", "[feedback] red_pin and green_pin both use GPIO 5"),
    ("[feedback]\nrgb = true\nred_pin = 5\n", "[feedback] rgb = true needs red_pin, green_pin and blue_pin"),
    ("[feedback]\nblue_pin = 5\n", "[feedback] blue_pin: only used with rgb = true"),
    ("[feedback]\nbuzer_pin = 5\n", '[feedback] buzer_pin: unknown key, did you mean "buzzer_pin"?'),
    ("[feedback]\ngreen_pin = 99\n", "[feedback] green_pin: expected an integer in 0..53, got 99"),
    ("[feedback]\nshow_seconds = 0\n", "[feedback] show_seconds: expected a number in [0.2, 30], got 0"),
])
def test_bad_feedback_config_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        parse_config(text, "kiosk.toml")
    assert message in str(exc.value) and "kiosk.toml" in str(exc.value)


def test_feedback_config_parses() -> None:
    cfg = parse_config("[feedback]\ngreen_pin = 5\nred_pin = 6\nbuzzer_pin = 13\nshow_seconds = 1.5\n")
    assert cfg.feedback.pins == {"green_pin": 5, "red_pin": 6, "buzzer_pin": 13}
    assert cfg.feedback.show_seconds == 1.5 and parse_config("").feedback.pins == {}
