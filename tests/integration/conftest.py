"""Fixtures shared by the MQTT integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.test_mqtt_link import Witness


@pytest.fixture
def witnesses() -> Iterator[Callable[..., Witness]]:
    made: list[Witness] = []

    def make(*args: Any, **kw: Any) -> Witness:
        made.append(Witness(*args, **kw))
        return made[-1]

    yield make
    for w in made:
        w.close()
