"""The sandbox's zygote: a clean interpreter that forks confined children for python tasks.

The worker starts it as ``python -I -c <bootstrap> <fd>`` with only allow-listed
environment variables (see ``_pool``). It imports what tasks commonly use once, then forks
children ahead of time on the worker's request (the warm pool). A child confines itself
(limits, pid namespace, uid, Landlock), then runs the task frames of one playbook that
arrive on its own socket, one at a time, and exits when the worker closes it (or its CPU
budget or task count runs out): nothing survives into another playbook's task. The zygote reaps the
children, tells the worker how each ended, and kills a child with all it started on request.
It holds no secret: whatever a child could take from it is already the child's.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
from typing import Any

import msgspec

from . import _confine
from ._capture import Captured
from ._task import execute_python, import_libs
from ._wire import (
    CONTROL_ENCODER,
    CONTROL_MAX_BYTES,
    ENCODER,
    SETUP,
    TASK,
    TO_ZYGOTE,
    Exited,
    Kill,
    Ready,
    Reply,
    Setup,
    Spawn,
    Spawned,
    Task,
    frame,
    recv_frame,
)

#: Exit code of a child that could not confine itself (it ran no task code).
EXIT_UNCONFINED = 3
#: Tasks one child serves at most (all of one playbook) before it exits.
MAX_TASKS_PER_CHILD = 1000
#: A task's exception message is cut to this many characters.
MESSAGE_MAX_CHARS = 16 * 1024
#: Largest task frame a child accepts (the worker's own inputs).
TASK_MAX_BYTES = 2**31 - 1


class _CpuExhausted(TimeoutError):
    pass


def _message(exc: BaseException) -> str:
    try:
        text = str(exc) or type(exc).__name__
    except Exception:
        text = type(exc).__name__
    return text[:MESSAGE_MAX_CHARS]


class Zygote:
    """Forks, reaps and kills the children of one worker."""

    def __init__(self, control: socket.socket, setup: Setup) -> None:
        self.control = control
        self.setup = setup
        self.limits = setup.limits
        self.children: dict[int, str] = {}  # pid -> its private directory
        self.layers: dict[str, str] = {}
        root = os.geteuid() == 0
        self.drop_uid = root and setup.drop_uid
        self.pidns = _confine.probe_pid_namespace() if root else None
        self.landlock_abi = _confine.landlock_abi() if setup.landlock else 0
        self.read_dirs, self.read_files = self._readable()
        self.view = self._reachable_view() if self.drop_uid else ""
        self._describe_layers(root)
        self._preload()
        # children share the zygote's heap copy-on-write; frozen objects are never touched by gc
        gc.freeze()

    def _readable(self) -> tuple[list[str], list[str]]:
        python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path}
        found = {os.path.realpath(p) for p in (*python, *_confine.SYSTEM_READ_DIRS) if p and os.path.isdir(p)}
        # one rule per tree: a folder inside another allowed one (the stdlib in the prefix,
        # /bin as /usr/bin) adds nothing but a rule each child has to load
        dirs = [
            d for d in sorted(found) if not any(d.startswith(p.rstrip("/") + "/") for p in found if p != d)
        ]
        files = [f for f in _confine.SYSTEM_READ_FILES if os.path.isfile(f)]
        # /proc/self is resolved by each child to its own /proc/<pid>
        return [*dirs, "/proc/self"], files

    def _reachable_view(self) -> str:
        """Let the sandbox uid reach the interpreter and the private folders (see _confine)."""
        try:
            masked = _confine.reachable_view(
                [*self.read_dirs, self.setup.temp_root], self.limits.uid, self.limits.gid
            )
        except OSError as exc:
            return f"off: {exc}"
        return f"on: {', '.join(masked)} masked down to the interpreter's files" if masked else "not needed"

    def _describe_layers(self, root: bool) -> None:
        layers = self.layers
        layers["process"] = "on: one forked child per task, its environment the allow-list only"
        names = "cpu, address space, open files, file size, core=0"
        layers["limits"] = f"on: {names}" + (", processes" if self.drop_uid else "")
        if self.drop_uid:
            layers["uid"] = f"on: {self.limits.uid}:{self.limits.gid}, no supplementary groups"
            layers["filesystem_view"] = self.view
        else:
            layers["uid"] = (
                "off: the worker is not root; children run as its uid" if not root else "off: disabled"
            )
        if self.pidns is not None:
            layers["pid_namespace"] = "on: a child is pid 1 of its own namespace"
        else:
            layers["pid_namespace"] = "off: children are killed by process group"
        abi = self.landlock_abi
        if abi >= 6:
            layers["landlock"] = f"on: ABI {abi}, filesystem, ptrace, signals, abstract unix sockets"
        elif abi >= 1:
            layers["landlock"] = (
                f"partial: ABI {abi}, filesystem and ptrace; signals not scoped (needs ABI 6)"
            )
        else:
            layers["landlock"] = (
                "off: not supported by this kernel" if self.setup.landlock else "off: disabled"
            )

    def _preload(self) -> None:
        failed = []
        for name in self.limits.preload:
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.append(f"{name} ({type(exc).__name__})")
        self.layers["preload"] = f"{len(self.limits.preload) - len(failed)} modules" + (
            f"; not importable: {', '.join(failed)}" if failed else ""
        )
        threads = threading.active_count()
        if threads > 1:
            self.layers["preload"] += f"; warning: {threads} threads at fork time"

    # -- the loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        """Answer the worker until it closes the control socket, then kill every child."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._send(Ready(os.getpid(), self.layers))
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(wake_r, selectors.EVENT_READ, "child")
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "child":
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_r, 512):
                                pass
                        self._reap()
                    elif not self._request():
                        return
        except ConnectionError:
            return  # the worker is gone
        finally:
            for pid in list(self.children):
                self._kill(pid)

    def _send(self, message: Any) -> None:
        self.control.sendall(CONTROL_ENCODER.encode(message))

    def _request(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.control, CONTROL_MAX_BYTES, 4)
        if not data:
            return False
        try:
            message = TO_ZYGOTE.decode(data)
        except msgspec.DecodeError:
            message = None
        if isinstance(message, Spawn) and len(fds) == 1:
            self._spawn(message.id, fds[0])
        else:
            for fd in fds:
                os.close(fd)
            if isinstance(message, Kill):
                self._kill(message.pid)
        return True

    def _spawn(self, request: int, fd: int) -> None:
        private = ""
        try:
            private = tempfile.mkdtemp(prefix="task-", dir=self.setup.temp_root)
            if self.drop_uid:
                os.chown(private, self.limits.uid, self.limits.gid)
            if self.pidns is not None:
                _confine.unshare(_confine.CLONE_NEWPID)
            try:
                pid = os.fork()
            except OSError:
                self._own_pid_namespace()
                raise
        except OSError as exc:
            os.close(fd)
            if private:
                shutil.rmtree(private, ignore_errors=True)
            self._send(Spawned(request, error=f"fork failed: {exc}"))
            return
        if pid == 0:
            self._child(fd, private)  # never returns
        self._own_pid_namespace()
        os.close(fd)
        self.children[pid] = private
        self._send(Spawned(request, pid))

    def _own_pid_namespace(self) -> None:
        """Fork the next children into our own namespace again (until the next unshare)."""
        if self.pidns is not None:
            _confine.setns(self.pidns, _confine.CLONE_NEWPID)

    def _kill(self, pid: int) -> None:
        if pid not in self.children:
            return  # already reaped: the number may belong to another process by now
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None or not found.si_pid:
                return
            pid = found.si_pid
            # still un-reaped, so its group id cannot be reused: kill what it left running
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            private = self.children.pop(pid, None)
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
                self._send(Exited(pid, status, usage.ru_utime + usage.ru_stime))

    # -- a child -------------------------------------------------------------------------------
    def _child(self, fd: int, private: str) -> None:
        try:
            self._confine(fd, private)
        except BaseException:
            os._exit(EXIT_UNCONFINED)
        try:
            sock = socket.socket(fileno=fd)
            sock.setblocking(True)
            self._serve(sock)
        finally:
            os._exit(0)

    def _confine(self, fd: int, private: str) -> None:
        os.setsid()
        _confine.set_parent_death_signal(signal.SIGKILL)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        # nothing of the zygote's stays open: not its control socket, not another child's
        os.closerange(3, fd)
        os.closerange(fd + 1, 1 << 16)
        os.chdir(private)
        os.environ.update({"TMPDIR": private, "HOME": private})
        tempfile.tempdir = private
        limits = self.limits
        if self.landlock_abi:
            _confine.restrict_filesystem(self.read_dirs, self.read_files, private)
        _confine.set_limits(
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_bytes,
            max_open_files=limits.max_open_files,
            file_max_bytes=limits.file_max_bytes,
            max_processes=limits.max_processes if self.drop_uid else None,
        )
        if self.drop_uid:
            _confine.drop_privileges(limits.uid, limits.gid)
        _confine.set_dumpable(False)
        # writing past RLIMIT_FSIZE fails with EFBIG instead of killing the task
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGXCPU, self._cpu_exhausted)

    def _cpu_exhausted(self, *_: Any) -> None:
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # the hard limit kills one second later
        raise _CpuExhausted(
            f"python task used its {self.limits.cpu_seconds} CPU seconds (WORKER_PYTHON_CPU_SECONDS)"
        )

    def _serve(self, sock: socket.socket) -> None:
        """Run the tasks the worker sends, one at a time, until it closes the socket, a task
        spends its CPU budget, too little is left for another, or the process has served
        :data:`MAX_TASKS_PER_CHILD`; each reply says whether another task may follow."""
        for served in range(1, MAX_TASKS_PER_CHILD + 1):
            try:
                data = recv_frame(sock, TASK_MAX_BYTES)
            except (EOFError, ConnectionError):
                return
            _confine.arm_cpu(self.limits.cpu_seconds)  # the last reply said a whole budget is left
            signal.signal(signal.SIGXCPU, self._cpu_exhausted)
            reply = self._run_one(TASK.decode(data))
            reusable = (
                reply.error_type != "TimeoutError"
                and served < MAX_TASKS_PER_CHILD
                and _confine.cpu_left(self.limits.cpu_seconds)
            )
            sock.sendall(frame(ENCODER.encode(msgspec.structs.replace(reply, reusable=reusable))))
            if not reusable:
                return

    def _run_one(self, task: Task) -> Reply:
        limits = self.limits
        captured = Captured(limits.log_max_bytes)
        captured.install()
        try:
            value = execute_python(task.code, task.inputs, import_libs(task.libs))
            result = ENCODER.encode(value)
            if len(result) > limits.output_max_bytes:
                reply = Reply(
                    ok=False,
                    error_type="SandboxError",
                    error_message=(
                        f"python task result is {len(result)} bytes, over the limit of "
                        f"{limits.output_max_bytes} (WORKER_PYTHON_OUTPUT_MAX_BYTES)"
                    ),
                )
            else:
                reply = Reply(ok=True, result=msgspec.Raw(result))
        except BaseException as exc:
            # the task's own exceptions, SystemExit included, are its error outcome
            error_type = "TimeoutError" if isinstance(exc, _CpuExhausted) else type(exc).__name__
            reply = Reply(ok=False, error_type=error_type, error_message=_message(exc))
        logs, dropped = captured.finish()
        return msgspec.structs.replace(reply, logs=logs, logs_dropped=dropped)


def main(control_fd: int) -> None:
    """The zygote process: read the setup, then serve the worker until it goes."""
    # the worker stops it by closing the socket; a terminal's Ctrl-C is for the worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _confine.set_parent_death_signal(signal.SIGKILL)
    _confine.set_dumpable(False)
    control = socket.socket(fileno=control_fd)
    setup = SETUP.decode(control.recv(CONTROL_MAX_BYTES))
    Zygote(control, setup).serve()
