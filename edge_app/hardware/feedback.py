"""Feedback to the person at the door: a green and a red LED (or one RGB LED) and a buzzer, all optional.

One pattern per outcome, so a glance or the sound tells what happened without a screen:

    granted   green, steady                  1 short beep
    refused   red, steady                    2 short beeps       (unknown face, expired, outside schedule...)
    no_mask   red blinking slowly (RGB: amber)  3 short beeps    (a mask is required and none was seen)
    spoof     red blinking fast (RGB: magenta)  1 long beep      (a photo or screen held up to the camera)

Everything runs in gpiozero's background blink threads: show() returns at once and a newer outcome
replaces the running pattern. These outputs are never the door relay (the config refuses shared pins).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gpiozero

from edge_app.config import FeedbackConfig

log = logging.getLogger(__name__)

GRANTED, REFUSED, NO_MASK, SPOOF = "granted", "refused", "no_mask", "spoof"
Color = tuple[float, float, float]
_RED, _GREEN, _AMBER, _MAGENTA = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 0.5, 0.0), (1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Pattern:
    green: bool  # which of two LEDs (with an RGB LED: `color`)
    color: Color
    blink: float | None  # half-period in seconds; None: steady
    beeps: int
    beep_seconds: float


PATTERNS = {
    GRANTED: Pattern(True, _GREEN, None, 1, 0.1),
    REFUSED: Pattern(False, _RED, None, 2, 0.1),
    NO_MASK: Pattern(False, _AMBER, 0.25, 3, 0.1),
    SPOOF: Pattern(False, _MAGENTA, 0.08, 1, 0.8),
}


def pattern_for(reason: str) -> str:
    """An access decision's reason code -> the pattern shown (every other refusal is REFUSED)."""
    return reason if reason in PATTERNS else REFUSED


class Feedback:
    """The outputs of a FeedbackConfig; show(outcome) starts a pattern and returns."""

    def __init__(self, config: FeedbackConfig, pin_factory: gpiozero.Factory | None = None) -> None:
        self.config = config
        self._rgb: gpiozero.RGBLED | None = None
        self._green: gpiozero.LED | None = None
        self._red: gpiozero.LED | None = None
        self._buzzer: gpiozero.Buzzer | None = None
        c = config
        try:
            if c.rgb:
                assert c.red_pin is not None and c.green_pin is not None and c.blue_pin is not None
                self._rgb = gpiozero.RGBLED(c.red_pin, c.green_pin, c.blue_pin, active_high=c.led_active_high,
                                            pwm=False, pin_factory=pin_factory)
            else:
                if c.green_pin is not None:
                    self._green = gpiozero.LED(c.green_pin, active_high=c.led_active_high, pin_factory=pin_factory)
                if c.red_pin is not None:
                    self._red = gpiozero.LED(c.red_pin, active_high=c.led_active_high, pin_factory=pin_factory)
            if c.buzzer_pin is not None:
                self._buzzer = gpiozero.Buzzer(c.buzzer_pin, active_high=c.buzzer_active_high,
                                               pin_factory=pin_factory)
        except Exception:
            self.close()
            raise

    def show(self, outcome: str) -> None:
        """Start the pattern of `outcome` (GRANTED, REFUSED, NO_MASK, SPOOF) in the background."""
        p = PATTERNS[outcome]
        on, n = self._timing(p)
        if self._rgb is not None:
            # pwm=False: only full on/off per channel, so amber shows as red+green.
            color = tuple(1.0 if v > 0 else 0.0 for v in p.color)
            self._rgb.blink(on_time=on, off_time=on if p.blink else 0.0, on_color=color, n=n, background=True)
        else:
            lit, dark = (self._green, self._red) if p.green else (self._red, self._green)
            if dark is not None:
                dark.off()
            if lit is not None:
                lit.blink(on_time=on, off_time=on if p.blink else 0.0, n=n, background=True)
        if self._buzzer is not None:
            self._buzzer.beep(on_time=p.beep_seconds, off_time=0.1, n=p.beeps, background=True)
        log.debug("feedback: %s", outcome)

    def _timing(self, p: Pattern) -> tuple[float, int]:
        """(on time, repetitions) so that the LED tells the outcome for about show_seconds."""
        if p.blink is None:
            return self.config.show_seconds, 1
        # At least two flashes: a single one would look like a steady pattern.
        return p.blink, max(2, round(self.config.show_seconds / (2 * p.blink)))

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running patterns end (tests, and a clean stop that lets the last beep finish)."""
        for dev in self._devices():
            thread = getattr(dev, "_blink_thread", None)  # gpiozero keeps no public handle on it
            if thread is not None:
                thread.join(timeout)

    def _devices(self) -> list[gpiozero.OutputDevice | gpiozero.RGBLED]:
        return [d for d in (self._rgb, self._green, self._red, self._buzzer) if d is not None]

    def close(self) -> None:
        for dev in self._devices():
            dev.close()
