"""The worker's side of the sandbox: a warm pool of the zygote's children, and tasks run in them.

Per task the critical path is one frame to an already forked, already confined child and
one frame back; the replacement child is forked meanwhile. A child serves the tasks of one
``key`` — the python tool passes the playbook's catalog path — one at a time: after a task it
is kept for that key's next one, for ``keep_seconds`` at most, so python steps pay for one
fork and one confinement per playbook and child, not one per step. A child never serves two
keys. A child's answer is untrusted input: its length is checked before it is read and it is
decoded into typed structs. Talking to the zygote itself is ``_zygote_client``'s part.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import structlog

from ._capture import MAX_LINES
from ._errors import SandboxError, describe_exit
from ._wire import ENCODER, HEADER, REPLY, Exited, Kill, Reply, SandboxLimits, Setup, Task, frame
from ._zygote_client import ZygoteClient

#: Variables of the worker's environment a task sees by default: none of them holds a secret.
DEFAULT_ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED")
#: How long to wait for the zygote's word on how a dead child ended, for the error message.
EXIT_REPORT_WAIT_SECONDS = 5.0
#: Room in a reply frame besides the result: stdout, stderr, the error message.
REPLY_OVERHEAD_BYTES = 1024 * 1024
#: msgpack framing of one output line besides its text (stream, time, level)
LINE_OVERHEAD_BYTES = 64
#: Folder of one worker's task folders: ``<tmp>/noetl-sandbox-<worker pid>-<random>``.
TEMP_PREFIX = "noetl-sandbox-"


def _sweep_stale_roots() -> None:
    """Remove the task folders of workers that died without cleaning up (killed -9)."""
    parent = tempfile.gettempdir()
    for entry in os.scandir(parent):
        owner = entry.name.removeprefix(TEMP_PREFIX).split("-", 1)[0]
        if not entry.name.startswith(TEMP_PREFIX) or not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except (PermissionError, OverflowError):
            pass  # alive (another user's), or not a pid


@dataclass
class _Child:
    pid: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    exited: asyncio.Future[Exited | None]
    #: when it was last given back, kept for its key's next task
    kept_at: float = 0.0


class SandboxPool:
    """Runs python tasks in confined child processes of one zygote, ``warm`` of them forked ahead.

    ``landlock`` / ``drop_uid`` False leave that layer off (tests check what the others hold).
    """

    def __init__(
        self,
        limits: SandboxLimits,
        *,
        warm: int = 2,
        env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW,
        timeout_seconds: float = 3600.0,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        landlock: bool = True,
        drop_uid: bool = True,
        keep: int = 8,
        keep_seconds: float = 30.0,
    ) -> None:
        self.limits = limits
        self.warm = warm
        #: children kept for their key's next task, at most this many at once
        self.keep = keep
        self.keep_seconds = keep_seconds
        self.env_allow = env_allow
        self.timeout_seconds = timeout_seconds
        self._log = logger or structlog.get_logger(service="noetl-system-worker")
        self._landlock = landlock
        self._drop_uid = drop_uid
        self._zygote: ZygoteClient | None = None
        self._starting = asyncio.Lock()
        self._idle: collections.deque[_Child] = collections.deque()
        #: idle children by the key (playbook) they serve, oldest first
        self._kept: collections.OrderedDict[str, list[_Child]] = collections.OrderedDict()
        self._sweeper: asyncio.Task[None] | None = None
        self._filling = 0
        self._temp_root: str | None = None
        self._closed = False
        self._background: set[asyncio.Task[object]] = set()
        self._warm_changed = asyncio.Condition()

    @property
    def layers(self) -> dict[str, str]:
        """The isolation layers in force (empty before :meth:`start`)."""
        return dict(self._zygote.layers) if self._zygote else {}

    @property
    def idle(self) -> int:
        """Children forked, confined and waiting for a task right now."""
        return len(self._idle)

    async def warmed(self) -> None:
        """Return once ``warm`` children wait for tasks (at once when they already do)."""
        async with self._warm_changed:
            await self._warm_changed.wait_for(lambda: len(self._idle) >= self.warm or self._closed)

    @property
    def zygote_pid(self) -> int | None:
        """The zygote's pid while it runs."""
        return self._zygote.pid if self._zygote and self._zygote.alive else None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> dict[str, str]:
        """Start the zygote and fork the warm children; returns the layers in force."""
        await self._ensure_zygote()
        return self.layers

    async def aclose(self) -> None:
        """Kill every child and stop the zygote."""
        self._closed = True
        async with self._warm_changed:
            self._warm_changed.notify_all()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self._close_waiting_children()
        if self._zygote is not None:
            await self._zygote.stop()
        if self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)

    async def _ensure_zygote(self) -> ZygoteClient:
        async with self._starting:
            if self._closed:
                raise SandboxError("the python sandbox is closed")
            zygote = self._zygote
            if zygote is None or not zygote.alive:
                if zygote is not None:
                    self._log.warning("python_sandbox_zygote_restarted", exited_pid=zygote.pid)
                    await zygote.stop()
                zygote = self._zygote = await self._start_zygote()
            self._refill()
            return zygote

    async def _start_zygote(self) -> ZygoteClient:
        if self._temp_root is None:
            await asyncio.to_thread(_sweep_stale_roots)
            self._temp_root = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
            os.chmod(self._temp_root, 0o711)  # children reach their own folder, list none
        setup = Setup(
            limits=self.limits, temp_root=self._temp_root, landlock=self._landlock, drop_uid=self._drop_uid
        )
        return await ZygoteClient.start(
            setup, env_allow=self.env_allow, log=self._log, on_exit=self._close_waiting_children
        )

    def _close_waiting_children(self) -> None:
        """The zygote is gone, and with it every child waiting for a task (warm or kept)."""
        while self._idle:
            self._idle.popleft().writer.close()
        for children in self._kept.values():
            for child in children:
                child.writer.close()
        self._kept.clear()

    # -- children --------------------------------------------------------------------------------
    def _refill(self) -> None:
        while not self._closed and len(self._idle) + self._filling < self.warm:
            self._filling += 1
            task = asyncio.create_task(self._fill_one())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _fill_one(self) -> None:
        try:
            child = await self._spawn()
        except SandboxError as exc:
            self._log.warning("python_sandbox_warm_fork_failed", error=str(exc))
            return
        finally:
            self._filling -= 1
        if self._closed:
            await self._end(child)
            return
        self._idle.append(child)
        async with self._warm_changed:
            self._warm_changed.notify_all()

    async def _spawn(self) -> _Child:
        zygote = self._zygote
        if zygote is None or not zygote.alive:
            zygote = await self._ensure_zygote()
        pid, ours, exited = await zygote.fork()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return _Child(pid, reader, writer, exited)

    async def _end(self, child: _Child, *, wait: bool = False) -> Exited | None:
        """Kill the child (whatever it left running too) and close our end of its socket.

        With ``wait``, return once the zygote reaped it (bounded): a task ended abnormally
        leaves no process behind by the time its tool call ends."""
        child.writer.close()
        zygote = self._zygote
        if zygote is not None and zygote.alive and not child.exited.done():
            with contextlib.suppress(SandboxError):
                await zygote.send(Kill(child.pid))
        if not wait:
            return None
        try:
            async with asyncio.timeout(EXIT_REPORT_WAIT_SECONDS):
                return await child.exited
        except TimeoutError:
            return None

    # -- tasks -----------------------------------------------------------------------------------
    async def run(
        self, code: str, inputs: dict[str, Any], libs: dict[str, str], key: str | None = None
    ) -> Reply:
        """Run one task, in a child kept for ``key`` or a fresh one; its reply
        (``ok`` False: the task's own exception).

        Raises :class:`SandboxError` when the child died, broke a limit or answered garbage;
        cancelling (a step or task timeout) kills the child at once."""
        payload = frame(ENCODER.encode(Task(code, inputs, libs)))
        child = self._take(key)
        fresh = child is None
        if child is None:
            child = self._idle.popleft() if self._idle else await self._spawn()
        reply: Reply | None = None
        try:
            async with asyncio.timeout(self.timeout_seconds):
                reply = await self._exchange(child, payload)
            return reply
        except TimeoutError:
            raise SandboxError(
                f"python task ran past {self.timeout_seconds:g} s (WORKER_PYTHON_TIMEOUT_SECONDS)",
                "TimeoutError",
            ) from None
        finally:
            if reply is not None and reply.reusable and key is not None and self.keep and not self._closed:
                self._give_back(key, child)
            else:
                await asyncio.shield(self._end(child, wait=reply is None))
            if fresh:
                # the replacement is forked after the task, not beside it: on a small machine
                # the fork would compete with the task for a core on the critical path
                self._refill()

    def _take(self, key: str | None) -> _Child | None:
        """An idle child kept for ``key`` that is still alive."""
        children = self._kept.get(key) if key is not None else None
        while children:
            child = children.pop()
            if not children:
                del self._kept[key]  # type: ignore[arg-type]
            if not child.exited.done():
                return child
            child.writer.close()
        return None

    def _give_back(self, key: str, child: _Child) -> None:
        """Keep ``child`` for ``key``'s next task; the oldest kept one goes past :attr:`keep`."""
        child.kept_at = asyncio.get_running_loop().time()
        self._kept.setdefault(key, []).append(child)
        self._kept.move_to_end(key)
        while sum(len(c) for c in self._kept.values()) > self.keep:
            oldest_key, oldest = next(iter(self._kept.items()))
            self._release(oldest.pop(0))
            if not oldest:
                del self._kept[oldest_key]
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_kept())

    def _release(self, child: _Child) -> None:
        """End a kept child without waiting (closing its socket ends it; the zygote reaps it)."""
        task = asyncio.create_task(self._end(child))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sweep_kept(self) -> None:
        """End kept children idle for more than :attr:`keep_seconds`, until none is kept."""
        loop = asyncio.get_running_loop()
        while self._kept and not self._closed:
            await asyncio.sleep(min(self.keep_seconds, 1.0))
            now = loop.time()
            for key in list(self._kept):
                children = self._kept[key]
                for child in [c for c in children if now - c.kept_at >= self.keep_seconds]:
                    children.remove(child)
                    self._release(child)
                if not children:
                    del self._kept[key]

    async def kept_drained(self) -> None:
        """Return once no child is kept any more (the sweeper ended the idle ones)."""
        if self._sweeper is not None:
            await asyncio.shield(self._sweeper)

    @property
    def kept(self) -> int:
        """Children kept, idle, for their key's next task."""
        return sum(len(c) for c in self._kept.values())

    async def _exchange(self, child: _Child, payload: bytes) -> Reply:
        limits = self.limits
        # the lines' text within the log budget, plus a few bytes of framing for each line
        logs = limits.log_max_bytes + MAX_LINES * LINE_OVERHEAD_BYTES
        limit = limits.output_max_bytes + logs + REPLY_OVERHEAD_BYTES
        try:
            child.writer.write(payload)
            await child.writer.drain()
            (size,) = HEADER.unpack(await child.reader.readexactly(HEADER.size))
            if size > limit:
                raise SandboxError(
                    f"python task answered {size} bytes, over the limit of {limit} (WORKER_PYTHON_OUTPUT_MAX_BYTES)"
                )
            data = await child.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise describe_exit(await self._end(child, wait=True), self.limits) from None
        try:
            return REPLY.decode(data)
        except Exception as exc:  # msgspec's or pyarrow's: the bytes came from the task's process
            raise SandboxError(f"python task's answer is not readable: {exc}") from None
