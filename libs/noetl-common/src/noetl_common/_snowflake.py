"""Snowflake ids: 41-bit ms since the epoch, 10-bit node, 12-bit sequence."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

DEFAULT_EPOCH_MS = 1704067200000  # 2024-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a_64(data: bytes) -> int:
    """FNV-1a 64-bit hash, used to derive a node id from a worker name."""
    h = _FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def node_id_from_env(env: Mapping[str, str] | None = None) -> int:
    """Node id: NOETL_SNOWFLAKE_NODE_ID, else NOETL_SHARD_ID, else FNV-1a of WORKER_ID/hostname."""
    env = os.environ if env is None else env
    for key in ("NOETL_SNOWFLAKE_NODE_ID", "NOETL_SHARD_ID"):
        raw = env.get(key, "").strip()
        if raw:
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {raw!r}") from None
            if not 0 <= value <= MAX_NODE:
                raise ValueError(f"{key} must be within 0..{MAX_NODE}, got {value}")
            return value
    name = env.get("WORKER_ID") or socket.gethostname()
    return fnv1a_64(name.encode()) & MAX_NODE


class Snowflake:
    """Thread-safe generator of 63-bit time-ordered ids.

    Within one millisecond the sequence increments; when it wraps, the generator waits for
    the next millisecond. If the clock goes backwards the last millisecond is reused, so ids
    never go back.
    """

    def __init__(
        self,
        node_id: int,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node id must be within 0..{MAX_NODE}, got {node_id}")
        self.node_id = node_id
        self.epoch_ms = epoch_ms
        self._clock = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Snowflake:
        env = os.environ if env is None else env
        raw_epoch = env.get("NOETL_SNOWFLAKE_EPOCH_MS", "").strip()
        try:
            epoch = int(raw_epoch) if raw_epoch else DEFAULT_EPOCH_MS
        except ValueError:
            raise ValueError(f"NOETL_SNOWFLAKE_EPOCH_MS must be an integer, got {raw_epoch!r}") from None
        return cls(node_id_from_env(env), epoch)

    def set_node(self, node_id: int) -> None:
        """Switch to another node id (one leased from the control-api); later ids carry it."""
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node id must be within 0..{MAX_NODE}, got {node_id}")
        with self._lock:
            self.node_id = node_id

    def next_id(self) -> int:
        with self._lock:
            now = max(self._clock(), self._last_ms)
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & MAX_SEQUENCE
                if self._sequence == 0:
                    while now <= self._last_ms:
                        now = self._clock()
            else:
                self._sequence = 0
            self._last_ms = now
            elapsed = now - self.epoch_ms
            return (elapsed << (NODE_BITS + SEQUENCE_BITS)) | (self.node_id << SEQUENCE_BITS) | self._sequence

    def decompose(self, value: int) -> tuple[int, int, int]:
        """Split an id into (unix ms, node, sequence)."""
        return (
            (value >> (NODE_BITS + SEQUENCE_BITS)) + self.epoch_ms,
            (value >> SEQUENCE_BITS) & MAX_NODE,
            value & MAX_SEQUENCE,
        )


def parse_id(value: object) -> int:
    """Accept an id as a JSON integer or a decimal string; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not an id: {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value.strip())
    else:
        raise ValueError(f"not an id: {value!r}")
    if not 0 < result < (1 << 63):
        raise ValueError(f"id out of range: {value!r}")
    return result
