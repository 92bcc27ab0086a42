"""The worker's handle on the zygote process: start it, ask it to fork or kill a child, read
its reports (a child forked, a child exited), stop it.

The zygote is a new interpreter, not a fork of the worker: nothing of the worker's memory
or environment reaches it, only the allow-listed variables. Control messages travel on a
``SOCK_SEQPACKET`` pair; a child's own socket is passed along with its ``Spawn``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import structlog

from ._errors import SandboxError
from ._wire import CONTROL_ENCODER, CONTROL_MAX_BYTES, FROM_ZYGOTE, Exited, Kill, Ready, Setup, Spawn, Spawned

#: How long the zygote may take to start and import its preload modules.
START_TIMEOUT_SECONDS = 60.0
#: How long a stopping zygote may take to exit before it is killed.
STOP_TIMEOUT_SECONDS = 5.0

# Run the zygote without the worker package's __init__ (nats, wasmtime ...): the two
# packages are registered empty, so only the sandbox's own modules are imported.
_BOOTSTRAP = """\
import sys, types
for name, path in {packages!r}:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from noetl_system_worker.sandbox._zygote import main
main(int(sys.argv[1]))
"""

_HERE = Path(__file__).resolve().parent
_PACKAGES = [("noetl_system_worker", str(_HERE.parent)), ("noetl_system_worker.sandbox", str(_HERE))]


def _launch(fd: int, env_allow: tuple[str, ...]) -> subprocess.Popen[bytes]:
    env = {name: os.environ[name] for name in env_allow if name in os.environ}
    return subprocess.Popen(
        [sys.executable, "-I", "-c", _BOOTSTRAP.format(packages=_PACKAGES), str(fd)],
        env=env,
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        cwd="/",
    )


class ZygoteClient:
    """One running zygote. ``on_exit`` runs once it is gone (stopped, died, or unreadable):
    every child it forked is gone with it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        control: socket.socket,
        ready: Ready,
        *,
        log: structlog.typing.FilteringBoundLogger,
        on_exit: Callable[[], None],
    ) -> None:
        self.proc = proc
        self.control = control
        self.pid = ready.pid
        self.layers = dict(ready.layers)
        self.alive = True
        self._log = log
        self._on_exit = on_exit
        self._ids = itertools.count(1)
        self._spawns: dict[int, asyncio.Future[Spawned]] = {}
        self._exits: dict[int, asyncio.Future[Exited | None]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        setup: Setup,
        *,
        env_allow: tuple[str, ...],
        log: structlog.typing.FilteringBoundLogger,
        on_exit: Callable[[], None],
    ) -> ZygoteClient:
        """Launch a zygote, hand it ``setup`` and wait for its ``ready`` (bounded)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            proc = await asyncio.to_thread(_launch, theirs.fileno(), env_allow)
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(ours, CONTROL_ENCODER.encode(setup))
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                ready = FROM_ZYGOTE.decode(await loop.sock_recv(ours, CONTROL_MAX_BYTES))
            if not isinstance(ready, Ready):
                raise SandboxError(f"the python sandbox zygote said {ready!r} instead of ready")
        except (OSError, TimeoutError, msgspec.DecodeError) as exc:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            ours.close()
            raise SandboxError(f"the python sandbox zygote did not start: {exc!r}") from None
        return cls(proc, ours, ready, log=log, on_exit=on_exit)

    async def stop(self) -> None:
        """Close the control socket (the zygote kills its children and exits on EOF), then
        wait for it to exit, killing it when it takes too long."""
        self.alive = False
        self.control.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        try:
            await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        self._abandon()

    async def fork(self) -> tuple[int, socket.socket, asyncio.Future[Exited | None]]:
        """A new child: its pid, our end of its socket, and its exit report to come."""
        request = next(self._ids)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        spawned: asyncio.Future[Spawned] = loop.create_future()
        self._spawns[request] = spawned
        try:
            with theirs:
                await self.send(Spawn(request), theirs.fileno())
            reply = await spawned
        except BaseException:
            ours.close()
            self._spawns.pop(request, None)
            raise
        if reply.error or not reply.pid:
            ours.close()
            raise SandboxError(f"could not fork a python sandbox process: {reply.error}")
        exited: asyncio.Future[Exited | None] = loop.create_future()
        if self.alive:
            self._exits[reply.pid] = exited
        else:
            exited.set_result(None)
        return reply.pid, ours, exited

    async def send(self, message: Spawn | Kill, fd: int | None = None) -> None:
        """One control message, with ``fd`` passed along when given."""
        if not self.alive:
            raise SandboxError("the python sandbox zygote exited")
        data = CONTROL_ENCODER.encode(message)
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(self.control, [data], [fd] if fd is not None else [])
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self.control, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.control)
            except OSError as exc:
                raise SandboxError(f"the python sandbox zygote is gone: {exc}") from None

    def _abandon(self) -> None:
        self.alive = False
        for spawn in self._spawns.values():
            if not spawn.done():
                spawn.set_exception(SandboxError("the python sandbox zygote exited"))
        for exit_ in self._exits.values():
            if not exit_.done():
                exit_.set_result(None)
        self._spawns.clear()
        self._exits.clear()
        self._on_exit()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.control, CONTROL_MAX_BYTES)
                if not data:
                    break
                message = FROM_ZYGOTE.decode(data)
                if isinstance(message, Spawned):
                    spawn = self._spawns.pop(message.id, None)
                    if spawn is not None and not spawn.done():
                        spawn.set_result(message)
                elif isinstance(message, Exited):
                    exit_ = self._exits.pop(message.pid, None)
                    if exit_ is not None and not exit_.done():
                        exit_.set_result(message)
        except (OSError, msgspec.DecodeError) as exc:
            self._log.error("python_sandbox_zygote_unreadable", error=repr(exc))
        finally:
            self._abandon()
