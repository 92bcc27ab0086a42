"""structlog JSON logging: one line per event, scrubbed.

Event names are snake_case ``<subject>_<what_happened>`` (``nats_connected``,
``outbox_claim_failed``); the details go in key=value fields, never in the name.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from ._scrub import scrub

#: Libraries that log every request they make at INFO (httpx: "HTTP Request: POST ...").
#: A service calls the control-api many times a second; those lines would drown its own.
CHATTY_LOGGERS = ("httpx", "httpcore")


def _scrub_processor(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    scrubbed: EventDict = scrub(dict(event_dict))
    return scrubbed


def configure_logging(service: str, level: str = "INFO") -> FilteringBoundLogger:
    """Configure JSON logs on stderr for ``service`` and return its logger.

    The HTTP clients' own request lines show only when ``level`` is DEBUG; otherwise
    they log warnings and errors alone.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
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
    log: FilteringBoundLogger = structlog.get_logger(service=service)
    return log
