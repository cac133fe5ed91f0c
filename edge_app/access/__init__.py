"""Access decisions: tracking and voting across frames, who may enter when, cooldowns."""
