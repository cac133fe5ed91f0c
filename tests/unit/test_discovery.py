"""Home Assistant discovery payloads: right topics, availability, and unlock only when enabled."""

from __future__ import annotations

import json

from edge_app.mqtt.discovery import discovery_messages


def decode(msgs):  # type: ignore[no-untyped-def]
    """The offered entities (an empty payload retracts one)."""
    return {topic: json.loads(payload) for topic, payload in msgs if payload}


def test_read_only_by_default():
    msgs = decode(discovery_messages("edge-app", "front"))
    assert set(msgs) == {"homeassistant/binary_sensor/front/door/config",
                         "homeassistant/sensor/front/last_access/config"}
    for cfg in msgs.values():
        assert cfg["availability_topic"] == "edge-app/front/status" and cfg["state_topic"] == "edge-app/front/state"
        assert cfg["device"]["identifiers"] == ["edge-app-front"]
        assert "command_topic" not in cfg
    assert msgs["homeassistant/binary_sensor/front/door/config"]["device_class"] == "lock"


def test_unlock_and_contact_when_configured():
    msgs = decode(discovery_messages("site", "back", ha_prefix="ha", remote_unlock=True, has_contact=True))
    lock = msgs["ha/lock/back/door/config"]
    assert lock["command_topic"] == "site/back/ha/unlock" and lock["payload_unlock"] == "UNLOCK"
    assert msgs["ha/binary_sensor/back/contact/config"]["device_class"] == "door"
    assert len({c["unique_id"] for c in msgs.values()}) == 3


def test_entities_not_offered_are_retracted():
    """Home Assistant removes an entity whose retained config is replaced by an empty payload: a config left by an
    earlier run (an unlock button after remote unlock was turned off) must not outlive the setting."""
    every = {"homeassistant/lock/front/door/config", "homeassistant/binary_sensor/front/door/config",
             "homeassistant/binary_sensor/front/contact/config", "homeassistant/sensor/front/last_access/config"}
    read_only = dict(discovery_messages("edge-app", "front"))
    assert set(read_only) == every
    assert read_only["homeassistant/lock/front/door/config"] == b""
    assert read_only["homeassistant/binary_sensor/front/contact/config"] == b""
    assert read_only["homeassistant/binary_sensor/front/door/config"] != b""
    unlocking = dict(discovery_messages("edge-app", "front", remote_unlock=True, has_contact=True))
    assert unlocking["homeassistant/binary_sensor/front/door/config"] == b""
    assert all(unlocking[t] for t in every - {"homeassistant/binary_sensor/front/door/config"})
    off = dict(discovery_messages("edge-app", "front", enabled=False, remote_unlock=True, has_contact=True))
    assert set(off) == every and set(off.values()) == {b""}
