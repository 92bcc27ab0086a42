"""The HTTP adapter: thin Litestar controllers over the application services."""

from ._app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
