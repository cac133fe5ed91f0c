"""Home Assistant MQTT discovery: the kiosk appears as a device with its door, contact and last access.

Published retained under ``<ha_prefix>/<component>/<device>/<object>/config``; every entity reads
the device's retained state topic and is available while the status topic says "online".
Remote unlock from Home Assistant is off unless the config enables it: HA cannot sign commands,
so its unlock button relies on the broker's ACLs alone. Without it the door is a read-only
binary sensor (device class "lock").

Every entity the kiosk does not offer (any, with discovery off) gets an empty retained payload,
which makes Home Assistant remove it: a config retained by an earlier run would otherwise keep,
say, a dead unlock button after remote unlock was turned off.
"""

from __future__ import annotations

import json
from typing import Any

from edge_app import __version__

# Every entity the kiosk may announce, (component, object id): the ones not offered are retracted.
ENTITIES = (("lock", "door"), ("binary_sensor", "door"), ("binary_sensor", "contact"), ("sensor", "last_access"))


def discovery_messages(prefix: str, device_id: str, *, ha_prefix: str = "homeassistant", enabled: bool = True,
                       remote_unlock: bool = False, has_contact: bool = False) -> list[tuple[str, bytes]]:
    """(topic, retained payload) pairs to publish after every connect; b"" retracts an entity."""
    base = f"{prefix}/{device_id}"
    device = {"identifiers": [f"edge-app-{device_id}"], "name": f"Door kiosk {device_id}",
              "manufacturer": "edge-app", "model": "masked-face door kiosk", "sw_version": __version__}
    common: dict[str, Any] = {"availability_topic": f"{base}/status", "payload_available": "online",
                              "payload_not_available": "offline", "device": device, "state_topic": f"{base}/state"}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if remote_unlock:
        out["lock", "door"] = {
            **common, "name": "Door", "unique_id": f"{device_id}-door",
            "value_template": "{{ value_json.door }}", "state_locked": "locked", "state_unlocked": "unlocked",
            "command_topic": f"{base}/ha/unlock", "payload_unlock": "UNLOCK", "payload_lock": "LOCK",
            "optimistic": False}
    else:
        out["binary_sensor", "door"] = {
            **common, "name": "Door lock", "unique_id": f"{device_id}-door", "device_class": "lock",
            # HA's lock device class: ON means unlocked.
            "value_template": "{{ 'ON' if value_json.door == 'unlocked' else 'OFF' }}"}
    if has_contact:
        out["binary_sensor", "contact"] = {
            **common, "name": "Door contact", "unique_id": f"{device_id}-contact", "device_class": "door",
            "value_template": "{{ 'ON' if value_json.door_open else 'OFF' }}"}
    out["sensor", "last_access"] = {
        **common, "name": "Last access", "unique_id": f"{device_id}-last-access", "icon": "mdi:account-key",
        "value_template": "{{ value_json.last_access.summary if value_json.last_access else 'none' }}",
        "json_attributes_topic": f"{base}/state", "json_attributes_template": "{{ value_json.last_access | tojson }}"}
    assert out.keys() <= set(ENTITIES)
    return [(f"{ha_prefix}/{component}/{device_id}/{obj}/config",
             json.dumps(out[component, obj], sort_keys=True).encode() if enabled and (component, obj) in out else b"")
            for component, obj in ENTITIES]
