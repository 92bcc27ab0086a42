"""What the CLI decides on its own, before or without a reachable server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from noetl_cli.__main__ import EXIT_ERROR, EXIT_USAGE, build_parser, main
from noetl_dev import free_port


def _closed_server() -> str:
    # A port nothing listens on: bound and released by free_port().
    return f"http://127.0.0.1:{free_port()}"


def test_an_unreachable_server_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    server = _closed_server()

    code = main(["--server", server, "catalog", "list"])

    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith(f"error: cannot reach the control-api at {server}")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [("{not json", "--payload is not valid JSON"), ("[1, 2]", "--payload must be a JSON object")],
)
def test_a_bad_payload_is_rejected_before_any_request(
    payload: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--server", _closed_server(), "execute", "examples/hello", "--payload", payload])

    assert code == EXIT_ERROR
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_a_payload_file_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--server", _closed_server(), "execute", "x", "--payload", f"@{tmp_path / 'none.json'}"])

    assert code == EXIT_ERROR
    assert "cannot read payload file" in capsys.readouterr().err


def test_server_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOETL_SERVER_URL", "http://example.invalid:9999")
    assert build_parser().parse_args(["catalog", "list"]).server == "http://example.invalid:9999"
    monkeypatch.delenv("NOETL_SERVER_URL")
    assert build_parser().parse_args(["catalog", "list"]).server == "http://127.0.0.1:8082"


def test_usage_errors_exit_2() -> None:
    done = subprocess.run([sys.executable, "-m", "noetl_cli"], capture_output=True, text=True, check=False)
    assert done.returncode == EXIT_USAGE
    assert "usage: noetl" in done.stderr


def test_plugin_commands_need_the_internal_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NOETL_INTERNAL_API_TOKEN", raising=False)
    assert main(["--server", "http://127.0.0.1:9", "plugin", "list"]) == EXIT_ERROR
    assert "NOETL_INTERNAL_API_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "message"),
    [("{oops", "--data is not valid JSON"), ('"text"', "--data must be a JSON object")],
)
def test_bad_credential_data_is_rejected_before_any_request(
    data: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--server", _closed_server(), "credential", "add", "x", "--data", data])

    assert code == EXIT_ERROR
    assert capsys.readouterr().err.startswith(f"error: {message}")
