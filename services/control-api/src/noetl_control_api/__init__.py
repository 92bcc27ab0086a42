"""NoETL control API: catalog, execute, orchestrator, events, claims."""

from ._options import OidcSettings, RetentionPolicy, SweepPolicy
from ._settings import Settings
from .http import create_app

__all__ = ["OidcSettings", "RetentionPolicy", "Settings", "SweepPolicy", "create_app"]
