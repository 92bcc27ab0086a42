"""Compiled plug-ins keyed by ``(path, version, digest)``, in memory and on disk.

The registry is the digest authority: before a call the worker asks it for the module
with ``If-None-Match: <digest it holds>``; 304 keeps the compiled module (no download),
200 with a new digest replaces it — a version bump or a same-version re-publish takes
effect on the next claim without a restart. Compiled modules are also serialized under
``WASM_MODULE_CACHE_DIR`` so a restarted worker deserializes instead of compiling.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from .._metrics import PLUGIN_DOWNLOADS, PLUGIN_LOAD_SECONDS
from ._host import PluginHost


@dataclass(frozen=True)
class PluginModule:
    """A registry module as fetched: its identity and bytes (None on 304 Not Modified)."""

    path: str
    version: int
    digest: str
    data: bytes | None


#: ``(path, version, known digest or None) -> PluginModule``; raises when the registry has none.
Fetch = Callable[[str, int | None, str | None], Awaitable[PluginModule]]


@dataclass
class Loaded:
    """A compiled module ready to call."""

    path: str
    version: int
    digest: str
    module: wasmtime.Module


class ModuleCache:
    """In-memory + on-disk cache of compiled modules; one entry per ``(path, version)``."""

    def __init__(self, host: PluginHost, cache_dir: Path | None = None, *, pool: str = "shared") -> None:
        self.host = host
        self.cache_dir = cache_dir
        self.pool = pool
        self._entries: dict[tuple[str, int | None], Loaded] = {}
        self._lock = threading.Lock()
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def _file(self, path: str, version: int, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        # a file written by another wasmtime build fails to deserialize and is recompiled
        name = hashlib.sha256(f"{path}\0{version}\0{digest}".encode()).hexdigest()[:40]
        return self.cache_dir / f"{name}.cwasm"

    async def load(self, path: str, version: int | None, fetch: Fetch) -> Loaded:
        """The compiled module for ``path``@``version`` (None: latest), revalidated with the registry."""
        key = (path, version)
        held = self._entries.get(key)
        started = time.perf_counter()
        fetched = await fetch(path, version, held.digest if held else None)
        if held is not None and fetched.data is None and fetched.digest == held.digest:
            return held
        if fetched.data is None:
            # 304 for a digest we no longer hold (another key): fetch the bytes outright
            fetched = await fetch(path, version, None)
        assert fetched.data is not None
        PLUGIN_DOWNLOADS.labels(path).inc()
        digest = hashlib.sha256(fetched.data).hexdigest()
        if digest != fetched.digest:
            raise ValueError(
                f"plug-in {path}@{fetched.version}: digest mismatch ({digest} != {fetched.digest})"
            )
        # compiling takes milliseconds and touches the disk: keep it off the event loop
        module, source = await asyncio.to_thread(
            self._materialise, path, fetched.version, digest, fetched.data
        )
        loaded = Loaded(path, fetched.version, digest, module)
        with self._lock:
            old = self._entries.get(key)
            self._entries[key] = loaded
        if old is not None and old.module is not module:
            self.host.forget(old.module)
        PLUGIN_LOAD_SECONDS.labels(self.pool, source).observe(time.perf_counter() - started)
        return loaded

    def _materialise(self, path: str, version: int, digest: str, data: bytes) -> tuple[wasmtime.Module, str]:
        """The compiled module and where it came from: ``cache`` (disk) or ``registry`` (compiled)."""
        module = self._from_disk(path, version, digest)
        if module is not None:
            return module, "cache"
        module = self.host.compile(data)
        self._to_disk(path, version, digest, module)
        return module, "registry"

    def _from_disk(self, path: str, version: int, digest: str) -> wasmtime.Module | None:
        file = self._file(path, version, digest)
        if file is None or not file.exists():
            return None
        try:
            return wasmtime.Module.deserialize_file(self.host.engine, str(file))
        except wasmtime.WasmtimeError:
            file.unlink(missing_ok=True)  # written by another wasmtime build: recompile
            return None

    def _to_disk(self, path: str, version: int, digest: str, module: wasmtime.Module) -> None:
        file = self._file(path, version, digest)
        if file is None:
            return
        # write-then-rename: a concurrent reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(module.serialize())
            os.replace(tmp, file)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
