"""A stdlib logging formatter that writes the same one-line JSON as structlog.

uvicorn and psycopg_pool log through the standard library; this keeps their lines
machine-readable next to the service's own structlog output.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
from noetl_common import scrub_text


class JsonFormatter(logging.Formatter):
    """``{"timestamp", "level", "logger", "event"}``, scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub_text(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = scrub_text(self.formatException(record.exc_info))
        return msgspec.json.encode(line).decode()


def uvicorn_log_config() -> dict[str, Any]:
    """A dictConfig for uvicorn's loggers: JSON lines on stderr (access lines are off)."""
    formatter = {"()": f"{__name__}.JsonFormatter"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"generic": formatter, "access": formatter},
        "handlers": {
            "console": {
                "formatter": "generic",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
