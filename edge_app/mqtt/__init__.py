"""MQTT control plane: events out through the outbox, signed admin commands in, Home Assistant discovery."""
