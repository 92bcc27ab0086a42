"""NOETL_EVENT_LOOP: uvloop by default, the stock loop on request, a bad value named."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest
import uvloop
from noetl_common import ConfigError, event_loop_factory, event_loop_name, run_service


def test_uvloop_is_the_default() -> None:
    assert event_loop_name({}) == "uvloop"
    assert event_loop_factory({}) is uvloop.new_event_loop


def test_asyncio_turns_it_off() -> None:
    assert event_loop_name({"NOETL_EVENT_LOOP": "AsyncIO"}) == "asyncio"
    assert event_loop_factory({"NOETL_EVENT_LOOP": "asyncio"}) is asyncio.new_event_loop


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^NOETL_EVENT_LOOP must be uvloop or asyncio, got 'tokio'"):
        event_loop_name({"NOETL_EVENT_LOOP": "tokio"})


@pytest.mark.parametrize(("setting", "loop_type"), [(None, uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)])
def test_run_service_runs_on_the_chosen_loop(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, loop_type: type
) -> None:
    if setting is None:
        monkeypatch.delenv("NOETL_EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("NOETL_EVENT_LOOP", setting)
    seen: list[asyncio.AbstractEventLoop] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(asyncio.get_running_loop())

    run_service(main)
    assert isinstance(seen[0], loop_type)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("setting", ["uvloop", "asyncio"])
def test_sigterm_stops_the_service_on_either_loop(setting: str) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal
        from noetl_common import run_service

        async def main(stop):
            asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stop.wait(), 10)
            print(type(asyncio.get_running_loop()).__module__)

        run_service(main)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"NOETL_EVENT_LOOP": setting, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(setting)


def test_a_bad_value_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from noetl_common import run_service\nrun_service(None)"],
        env={"NOETL_EVENT_LOOP": "tokio", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NOETL_EVENT_LOOP" in lines[0]
