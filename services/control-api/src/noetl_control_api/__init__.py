"""NoETL control API: catalog, execute, orchestrator, events, claims."""

from ._options import OidcSettings, RetentionPolicy, SweepPolicy
from ._server import BoundedHttpTools
from ._settings import Settings
from .http import create_app

__all__ = ["BoundedHttpTools", "OidcSettings", "RetentionPolicy", "Settings", "SweepPolicy", "create_app"]
