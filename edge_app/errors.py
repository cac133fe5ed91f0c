"""The exception tree. Every error we raise derives from EdgeAppError *and* the built-in
it resembles, so callers can catch either (``except FileNotFoundError`` keeps working)."""

from __future__ import annotations


class EdgeAppError(Exception):
    """Root of every error edge-app raises on purpose."""


class ConfigError(EdgeAppError, ValueError):
    """A configuration value or key is wrong; the message names the key and the file."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """The configuration file does not exist; the message names the path."""


class ModelError(EdgeAppError, RuntimeError):
    """A model file is unusable: wrong checksum, wrong shape, not loadable."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model file or the manifest is missing."""


class ImageError(EdgeAppError, ValueError):
    """An image could not be read or decoded."""


class SourceError(EdgeAppError, OSError):
    """A frame source (file, folder, video, camera, stream) could not be opened or read."""


class GalleryError(EdgeAppError, RuntimeError):
    """The gallery database is unusable or an operation on it failed."""


class PersonNotFoundError(GalleryError, KeyError):
    """No person with that name or id in the gallery."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "person not found"


class GalleryInputError(GalleryError, ValueError):
    """An argument to a gallery operation is invalid: name, date, embedding, model sha."""


class TemplateModelMismatch(GalleryError, ValueError):
    """A template was made by another embedder (different sha256) and cannot be compared."""


class InputNotFoundError(SourceError, FileNotFoundError):
    """A file or folder given as input does not exist."""


class DoorError(EdgeAppError, RuntimeError):
    """The door relay could not be driven, or the door was used after close()."""


class SourceTimeoutError(SourceError, TimeoutError):
    """A live source delivered no frame for longer than its timeout, reopening included."""


class CryptoKeyError(EdgeAppError, ValueError):
    """A signing key is unusable: not a key, wrong type or length, encrypted; the message says which."""


class CryptoKeyNotFoundError(CryptoKeyError, FileNotFoundError):
    """A key file does not exist; the message names the path."""


class CryptoKeyExistsError(EdgeAppError, FileExistsError):
    """A key file is already there and overwriting was not asked for."""


class CommandRejected(EdgeAppError, ValueError):
    """An admin command was refused (edge_app.mqtt.security).

    ``reason`` is a short code: too_large, malformed, bad_version, unknown_key, bad_signature,
    expired, from_future, replayed, wrong_target. ``command_id`` is None when it was not readable.
    """

    def __init__(self, reason: str, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.command_id = command_id

    def __str__(self) -> str:  # the code first, so a logged rejection can be grepped by it
        return f"{self.reason}: {self.args[0]}" if self.args else self.reason

    def __reduce__(self) -> tuple[type[CommandRejected], tuple[str, str, str | None]]:
        # The default pickling passes args only, which does not fit __init__.
        return type(self), (self.reason, str(self.args[0]) if self.args else "", self.command_id)


class PlatformError(EdgeAppError, RuntimeError):
    """The machine cannot run the kiosk (32-bit OS)."""
