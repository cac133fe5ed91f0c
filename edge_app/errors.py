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
