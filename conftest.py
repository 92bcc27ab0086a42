"""Fixtures shared by every package's tests: real Postgres and NATS from pip wheels."""

pytest_plugins = ["noetl_dev.pytest_plugin"]
