"""edge-app: masked-face door-access kiosk firmware."""

from edge_app.errors import EdgeAppError

__all__ = ["EdgeAppError", "__version__"]
__version__ = "0.1.0"
