"""NoETL control API: catalog, execute, orchestrator, events, claims."""

from ._options import OidcSettings, RetentionPolicy
from ._settings import Settings
from .http import create_app

__all__ = ["OidcSettings", "RetentionPolicy", "Settings", "create_app"]
