"""NoETL control API: catalog, execute, orchestrator, events, claims."""

from ._settings import Settings
from .http import create_app

__all__ = ["Settings", "create_app"]
