"""Embedded dev stack: Postgres, nats-server and the suite on loopback."""

from ._procs import Proc, create_database, free_port, start_nats, start_postgres
from ._stack import SERVICES, Service, Stack, StackError, read_state, stop_recorded

__all__ = [
    "SERVICES",
    "Proc",
    "Service",
    "Stack",
    "StackError",
    "create_database",
    "free_port",
    "read_state",
    "start_nats",
    "start_postgres",
    "stop_recorded",
]
