"""Entry point: ``noetl-system-worker`` (the same program serves every pool)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
from noetl_common import configure_logging, env_opt, run_service, serve_ops

from ._api import ClientPool
from ._config import WorkerConfig
from ._worker import Worker
from .sandbox import SandboxPool, make_undumpable
from .tools import default_registry
from .wasm import ModuleCache, PluginHost, WasmLimits


def wasm_cache_dir() -> Path | None:
    """``WASM_MODULE_CACHE_DIR``: where compiled plug-ins are serialized (unset: memory only)."""
    raw = env_opt("WASM_MODULE_CACHE_DIR")
    return Path(raw) if raw else None


async def serve(stop: asyncio.Event) -> None:
    """Read the config, serve the ops endpoints and run the worker until ``stop``."""
    config = WorkerConfig.from_env()
    log = configure_logging("noetl-system-worker", config.log_level)
    # before anything else runs: a process of our uid may then not read our environ or memory
    if not make_undumpable():
        log.warning("worker_undumpable_failed", risk="same-uid processes may read the worker's memory")
    # python tasks run in the loop's default executor: size it to the concurrency so every
    # slot gets a thread (the stdlib default is min(32, cpus + 4)), plus spares for
    # threads still finishing after their command timed out.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.max_concurrent + 4, thread_name_prefix="noetl-task")
    )
    clients = ClientPool(config.server_url, allowed=config.allowed_server_urls, token=config.api_token)
    host = PluginHost(WasmLimits.from_env())
    plugins = ModuleCache(host, wasm_cache_dir(), pool=config.pool)
    sandbox = await python_sandbox(config, log)
    registry = default_registry(config, sandbox=sandbox, plugins=plugins)
    worker = Worker(config, api_for=clients.get, registry=registry, logger=log)
    try:
        async with serve_ops(config.metrics_host, config.metrics_port, worker.ready, worker.details):
            await worker.run(stop)
    finally:
        await clients.aclose()
        host.close()
        if sandbox is not None:
            await sandbox.aclose()


async def python_sandbox(
    config: WorkerConfig, log: structlog.typing.FilteringBoundLogger
) -> SandboxPool | None:
    """The started sandbox pool of ``WORKER_PYTHON_ISOLATION=process`` (None for ``thread``).

    Logs once which isolation layers hold on this host, and warns about those that do not."""
    settings = config.python
    if settings.isolation != "process":
        log.warning(
            "python_sandbox_disabled",
            isolation=settings.isolation,
            risk="python tasks run in the worker's threads with its privileges",
        )
        return None
    pool = SandboxPool(
        settings.limits,
        warm=settings.warm,
        keep=settings.keep,
        keep_seconds=settings.keep_seconds,
        env_allow=settings.env_allow,
        timeout_seconds=settings.timeout_seconds,
        logger=log,
    )
    layers = await pool.start()
    log.info("python_sandbox_started", zygote_pid=pool.zygote_pid, warm=settings.warm, **layers)
    missing = sorted(name for name, state in layers.items() if state.startswith(("off", "partial")))
    if missing:
        log.warning("python_sandbox_layers_missing", layers=missing)
    return pool


def main() -> None:
    """Run the worker; SIGTERM/SIGINT stop it gracefully; bad config exits 2 with one line."""
    run_service(serve)


if __name__ == "__main__":
    main()
