"""Offline: upstream's verbs as this CLI parses them, ``--version``, ``-o``, and a quiet end
when the reader of stdout goes away."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from noetl_cli.__main__ import EXIT_USAGE, build_parser, main
from noetl_cli._output import EXIT_BROKEN_PIPE
from noetl_cli._upstream import run_payload, set_value


def test_set_values_are_typed_as_upstream_types_them() -> None:
    assert set_value("count=3") == ("count", 3)
    assert set_value("flag=true") == ("flag", True)
    assert set_value("name=Upstream") == ("name", "Upstream")
    assert set_value("empty=") == ("empty", "")
    assert set_value("url=http://x?a=b") == ("url", "http://x?a=b")


def test_run_payload_layers_input_payload_and_sets(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('{"a": 1, "b": 1, "c": 1}')
    args = build_parser().parse_args(
        ["run", "x", "-i", str(tmp_path / "in.json"), "--payload", '{"b": 2, "c": 2}', "--set", "c=3"]
    )
    assert run_payload(args) == {"a": 1, "b": 2, "c": 3}


def test_local_runtime_is_refused_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", "http://127.0.0.1:9", "run", "examples/hello", "-r", "local"]) == EXIT_USAGE
    assert "-r distributed" in capsys.readouterr().err


def test_rerun_flags_need_a_step_and_are_refused_before_any_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--server", "http://127.0.0.1:9", "rerun", "1", "--dry-run"]) == EXIT_USAGE
    assert "--from STEP" in capsys.readouterr().err
    args = build_parser().parse_args(["rerun", "1", "--from", "load", "--failed-only", "--set", "fix=true"])
    assert (args.step, args.failed_only, args.dry_run, args.set) == ("load", True, False, ["fix=true"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("noetl ")


@pytest.mark.parametrize(
    "argv",
    [
        ["catalog", "list"],
        ["catalog", "list", "Playbook"],
        ["list", "Credential"],
        ["status", "1"],
        ["events", "1"],
        ["logs", "1"],
        ["replay", "1"],
        ["rerun", "1", "--from", "s", "--dry-run"],
        ["executions", "list"],
        ["credential", "list"],
        ["credential", "show", "n"],
        ["get", "credential", "n"],
        ["plugin", "list"],
        ["token", "list"],
        ["whoami"],
    ],
)
def test_every_read_command_takes_an_output_format(argv: list[str]) -> None:
    parser = build_parser()
    assert isinstance(parser.parse_args([*argv, "-o", "table"]), argparse.Namespace)
    assert parser.parse_args([*argv, "-o", "json"]).output == "json"
    assert parser.parse_args([*argv, "--json"]).output == "json"


def test_upstream_verbs_parse() -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "catalog://a/b@2", "-r", "distributed", "--set", "k=v", "--set", "n=1"])
    assert (run.ref, run.runtime, run.set) == ("catalog://a/b@2", "distributed", ["k=v", "n=1"])
    register = parser.parse_args(["register", "playbook", "--file", "x.yaml"])
    assert register.file == "x.yaml"
    status = parser.parse_args(["execute", "status", "12"])
    assert (status.path, status.extra) == ("status", "12")
    cancel = parser.parse_args(["cancel", "12", "--cascade", "--reason", "why"])
    assert (cancel.cascade, cancel.reason) == (True, "why")


def test_a_reader_that_leaves_ends_the_output_quietly() -> None:
    # a catalog far larger than a pipe's buffer, printed into a pipe whose reader closes early
    code = (
        "import sys; from noetl_cli import __main__ as m;"
        " m.Api.catalog = lambda self: [{'path': 'p' * 100, 'version': 1, 'name': 'n'}] * 20000;"
        " sys.exit(m.main(['--server', 'http://127.0.0.1:9', 'catalog', 'list']))"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.read(100)
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait() == EXIT_BROKEN_PIPE
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


@pytest.mark.parametrize("output", ["json", "table"])
def test_a_reader_that_leaves_ends_logs_follow_quietly(output: str) -> None:
    # pages of lines far larger than a pipe's buffer, of an execution that never ends
    code = (
        "import sys; from noetl_cli import __main__ as m, _api;"
        " line = {'seq': 1, 'step': 's', 'command_id': '1', 'attempt': 1, 'stream': 'stdout', 'level': None,"
        " 'at': 'T', 'text': 'x' * 100};"
        " _api.Api.request = lambda self, *a, **k: {'items': [line] * 20000, 'next_after': None, 'truncated': False};"
        " _api.Api.execution = lambda self, *a, **k: {'status': 'RUNNING'};"
        f" sys.exit(m.main(['--server', 'http://127.0.0.1:9', 'logs', '1', '--follow', '-o', '{output}']))"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.read(100)
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait() == EXIT_BROKEN_PIPE
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
