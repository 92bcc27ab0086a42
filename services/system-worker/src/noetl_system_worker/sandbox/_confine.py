"""The kernel calls that confine a sandboxed child (Linux; libc through ctypes).

Each function does one thing and raises ``OSError`` when the kernel refuses; the zygote
decides which layers it can use at start (:func:`probe_pid_namespace`, :func:`landlock_abi`)
and a child that cannot apply one of them exits before it runs any task code.
"""

from __future__ import annotations

import ctypes
import os
import resource
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REC = 0x4000
MS_PRIVATE = 0x40000
# open_tree/move_mount have one number on every architecture (the unified table from 424 on)
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 0x1
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4

#: Read-only for every child: what an interpreter and its libraries open (system part).
SYSTEM_READ_DIRS = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/ca-certificates",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)
#: Single files of /etc for TLS, name resolution, time zones and user names.
SYSTEM_READ_FILES = (
    "/etc/ssl/openssl.cnf",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/passwd",
    "/etc/group",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
)
#: Device files a child may read and write.
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret: int) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def prctl(option: int, value: int) -> None:
    """``prctl(option, value)``."""
    _check(_lib().prctl(option, ctypes.c_ulong(value), 0, 0, 0))


def set_dumpable(dumpable: bool) -> None:
    """A non-dumpable process's /proc files (environ, mem, maps) are root's, and it cannot be
    ptraced by a process of the same uid."""
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_parent_death_signal(signum: int) -> None:
    """Receive ``signum`` when the parent exits."""
    prctl(PR_SET_PDEATHSIG, signum)


def unshare(flags: int) -> None:
    """``unshare(flags)`` (os.unshare arrives only with Python 3.12)."""
    _check(_lib().unshare(flags))


def setns(fd: int, nstype: int) -> None:
    """``setns(fd, nstype)``."""
    _check(_lib().setns(fd, nstype))


def probe_pid_namespace() -> int | None:
    """A descriptor of our own pid namespace when each child can get one of its own, else None.

    The child forked after ``unshare(CLONE_NEWPID)`` is pid 1 of a new namespace: when it
    ends, the kernel kills every process it left, whatever session or group they moved to.
    """
    try:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        unshare(CLONE_NEWPID)
        setns(own, CLONE_NEWPID)
    except OSError:
        os.close(own)
        return None
    return own


def _enterable(path: str, uid: int, gid: int) -> bool:
    info = os.stat(path)
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(_lib().mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]))


def _blocked(paths: Iterable[str], uid: int, gid: int) -> dict[str, set[str]]:
    """Directories ``uid`` cannot enter on the way to ``paths``, and the entries needed in each."""
    blocked: dict[str, set[str]] = {}
    for path in paths:
        current = "/"
        for name in Path(path).parts[1:]:
            if not _enterable(current, uid, gid):
                blocked.setdefault(current, set()).add(name)
                break
            current = os.path.join(current, name)
    return blocked


def reachable_view(paths: Iterable[str], uid: int, gid: int) -> list[str]:
    """Make ``paths`` reachable by ``uid`` in a private mount namespace; the directories masked.

    A directory on the way that ``uid`` may not enter (``/root`` when the interpreter lives
    in a user's home) is covered by a small tmpfs holding only the entries on the way,
    bind-mounted back: the child reaches the interpreter's files and sees nothing else
    there. Needs CAP_SYS_ADMIN; changes nothing outside this process's namespace.
    """
    wanted = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})
    unshare(CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    masked: list[str] = []
    for _ in range(
        16
    ):  # one level of nesting per pass (a 0700 home folder, then a 0700 folder inside it ...)
        blocked = _blocked(wanted, uid, gid)
        if not blocked:
            return masked
        for directory, names in sorted(blocked.items()):
            trees = {}
            for name in sorted(names):
                source = os.path.join(directory, name)
                trees[name] = (
                    _check(
                        _lib().syscall(
                            SYS_OPEN_TREE,
                            AT_FDCWD,
                            source.encode(),
                            OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE,
                        )
                    ),
                    os.path.isdir(source),
                )
            info = os.stat(directory)
            options = f"mode=0755,uid={info.st_uid},gid={info.st_gid},size=1m"
            _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, options)
            for name, (fd, is_dir) in trees.items():
                target = os.path.join(directory, name)
                if is_dir:
                    os.mkdir(target)
                else:
                    os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
                try:
                    _check(
                        _lib().syscall(
                            SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH
                        )
                    )
                finally:
                    os.close(fd)
            masked.append(directory)
    raise OSError(f"directories nested too deep to make reachable: {sorted(blocked)}")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable."""
    try:
        import landlockpy

        return landlockpy.abi_version()
    except Exception:
        return 0


def restrict_filesystem(read_dirs: Iterable[str], read_files: Iterable[str], private_dir: str) -> None:
    """Landlock: read-only ``read_dirs`` / ``read_files``, the devices, read-write ``private_dir``;
    no other file access; signals and abstract unix sockets only within this domain (ABI ≥ 6)."""
    from landlockpy import AccessFS, AccessNet, Ruleset, Scope

    read = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
    file_rights = AccessFS.READ_FILE | AccessFS.EXECUTE
    device = AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.TRUNCATE | AccessFS.IOCTL_DEV
    with Ruleset(handled_net=AccessNet.NONE, scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET) as ruleset:
        everything = ruleset.handled_fs
        for path in read_dirs:
            if os.path.isdir(path):
                ruleset.allow_path(path, read)
        for path in read_files:
            if os.path.isfile(path):
                ruleset.allow_path(path, file_rights)
        for path in DEVICES:
            if os.path.exists(path):
                ruleset.allow_path(path, device)
        ruleset.allow_path(private_dir, everything)
        ruleset.restrict()


def set_limits(
    *,
    cpu_seconds: int,
    memory_bytes: int,
    max_open_files: int,
    file_max_bytes: int,
    max_processes: int | None,
) -> None:
    """Soft and hard limits; a hard limit only ever goes down, so the task cannot raise it.

    CPU: SIGXCPU at the soft limit (the child turns it into an exception; see
    :func:`arm_cpu` for the soft limit of each task), SIGKILL at the hard one: twice the
    budget, since a child serves several tasks of one playbook while it has budget left."""
    wanted = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cpu_seconds, 2 * cpu_seconds + 1),
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_NOFILE, max_open_files, max_open_files),
        (resource.RLIMIT_FSIZE, file_max_bytes, file_max_bytes),
    ]
    if max_processes is not None:
        wanted.append((resource.RLIMIT_NPROC, max_processes, max_processes))
    for kind, soft, hard in wanted:
        _, current = resource.getrlimit(kind)
        if current != resource.RLIM_INFINITY:
            hard = min(hard, current)
        resource.setrlimit(kind, (min(soft, hard), hard))


def cpu_used() -> float:
    """CPU seconds this process has used (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _next_soft(cpu_seconds: int) -> tuple[int, int]:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    return int(cpu_used()) + 1 + cpu_seconds, hard


def cpu_left(cpu_seconds: int) -> bool:
    """Whether a whole task's ``cpu_seconds`` still fit under the hard limit."""
    soft, hard = _next_soft(cpu_seconds)
    return hard == resource.RLIM_INFINITY or soft < hard


def arm_cpu(cpu_seconds: int) -> None:
    """Give the next task ``cpu_seconds`` of CPU: the soft limit moves to what the process
    used so far plus the budget (under the hard limit set at confinement)."""
    soft, hard = _next_soft(cpu_seconds)
    resource.setrlimit(
        resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
    )


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups, for good (real, effective, saved)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
