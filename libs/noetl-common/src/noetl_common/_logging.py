"""structlog JSON logging: one line per event, scrubbed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from ._scrub import scrub


def _scrub_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    scrubbed: dict[str, Any] = scrub(dict(event_dict))
    return scrubbed


def configure_logging(service: str, level: str = "INFO") -> structlog.stdlib.BoundLogger:
    """Configure JSON logs on stderr for ``service`` and return its logger."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger(service=service)
