"""The start-up check that the NATS server takes every event the control-api writes."""

from __future__ import annotations

from noetl_common import ConfigError, LimitsReply


def check_max_payload(server_max_payload: int, limits: LimitsReply) -> None:
    """ConfigError, one line naming both values and the variable to change, when the server
    takes less than the control-api writes events for (those rows could never be published)."""
    if server_max_payload < limits.nats_max_payload:
        raise ConfigError(
            f"the NATS server's max_payload is {server_max_payload} bytes, below the"
            f" {limits.nats_max_payload} the control-api writes events for: set"
            f" NOETL_NATS_MAX_PAYLOAD_BYTES={server_max_payload} on the control-api"
            " (or raise max_payload on the NATS server)"
        )
