"""Embedded dev stack: Postgres, nats-server and the suite on loopback."""

from ._cluster import CLUSTER, NatsCluster
from ._procs import Proc, create_database, free_port, start_nats, start_postgres
from ._recorded import read_state, stop_recorded
from ._services import SERVICES, Service, StackError
from ._stack import Stack

__all__ = [
    "CLUSTER",
    "SERVICES",
    "NatsCluster",
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
