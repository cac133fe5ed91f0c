"""Outbox and seen-command ids in a real SQLite gallery file: order, ack, persistence, limits."""

from __future__ import annotations

import pytest

from edge_app.errors import GalleryInputError
from edge_app.gallery.outbox import Outbox, SeenCommands
from edge_app.gallery.store import Gallery


def test_messages_keep_their_order_until_acknowledged_and_survive_a_reopen(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        box = Outbox(g)
        seqs = [box.put("edge-app/k1/events", f"e{i}".encode()) for i in range(5)]
        assert seqs == sorted(seqs) and len(box) == 5
        assert [m.payload for m in box.peek(2)] == [b"e0", b"e1"]
        assert box.ack(seqs[0]) and not box.ack(seqs[0])
    with Gallery(path) as g:  # a power cut between: the rest is still there, in order
        box = Outbox(g)
        assert [m.payload for m in box.peek(10)] == [b"e1", b"e2", b"e3", b"e4"]
        assert box.peek(1)[0].qos == 1 and box.peek(1)[0].retain is False


def test_outbox_drops_the_oldest_past_its_limit(tmp_path, caplog):
    with Gallery(tmp_path / "g.db") as g:
        box = Outbox(g, max_messages=3)
        for i in range(5):
            box.put("t", str(i).encode())
        assert [m.payload for m in box.peek(10)] == [b"2", b"3", b"4"]
        assert "dropped the 1 oldest" in caplog.text


@pytest.mark.parametrize("topic,qos,message", [
    ("a/+/b", 1, "not a publishable MQTT topic"),
    ("", 1, "not a publishable MQTT topic"),
    ("a/#", 1, "not a publishable MQTT topic"),
    ("a/b", 3, "qos must be 0, 1 or 2"),
])
def test_bad_messages_are_refused(tmp_path, topic, qos, message):
    with Gallery(tmp_path / "g.db") as g, pytest.raises(GalleryInputError, match=message):
        Outbox(g).put(topic, b"x", qos=qos)


def test_seen_command_ids(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        seen = SeenCommands(g)
        assert seen.add("cmd-1", 1000.0) and not seen.add("cmd-1", 1000.0)
        assert "cmd-1" in seen and "cmd-2" not in seen
        seen.add("cmd-2", 2000.0)
        assert seen.forget_before(1500.0) == 1
        assert "cmd-1" not in seen and "cmd-2" in seen
