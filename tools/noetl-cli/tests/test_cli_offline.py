"""What the CLI decides on its own, before or without a reachable server."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from noetl_cli.__main__ import EXIT_ERROR, EXIT_USAGE, build_parser, main
from noetl_cli._auth_commands import duration_seconds
from noetl_cli._credentials import store_token, token_for
from noetl_cli._logs import table_row
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


def test_the_token_comes_from_the_environment_else_the_file_of_its_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("NOETL_API_TOKEN", raising=False)
    assert token_for("http://a:8082") is None
    path = store_token("http://a:8082/", "noetl_stored")
    store_token("http://b:8082", "noetl_other")
    assert path == tmp_path / "noetl" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_for("http://a:8082") == "noetl_stored" and token_for("http://b:8082") == "noetl_other"
    monkeypatch.setenv("NOETL_API_TOKEN", "noetl_from_env")
    assert token_for("http://a:8082") == "noetl_from_env"


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90", 90), ("2w", 1209600)])
def test_expiry_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


def test_a_bad_expiry_is_one_line_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--server", _closed_server(), "token", "create", "--name", "n", "--role", "viewer", "--expires-in", "soon"]
    assert main(argv) == EXIT_ERROR
    assert "--expires-in must be a number" in capsys.readouterr().err


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


def test_logs_shows_a_tasks_control_characters_escaped_and_takes_its_options() -> None:
    row = table_row({"seq": 3, "at": "T", "step": "s", "stream": "log", "level": "INFO", "text": "a\x1b[2Jb\tc\x07"})
    assert row == ["3", "T", "s", "log:INFO", "a\\x1b[2Jb\tc\\x07"]
    args = build_parser().parse_args(["logs", "12", "--step", "end", "--follow", "-o", "json"])
    assert (args.execution_id, args.step, args.follow, args.output) == ("12", "end", True, "json")


def _bash_completes(words: list[str]) -> list[str]:
    """What bash offers after ``words`` with the script ``noetl completion bash`` prints."""
    script = subprocess.run(
        [sys.executable, "-m", "noetl_cli", "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    driver = (
        'eval "$NOETL_COMPLETION"\n'
        'fn=$(complete -p noetl | sed -E "s/.*-F ([^ ]+).*/\\1/")\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); "$fn"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", driver, "bash", *words],
        capture_output=True,
        text=True,
        check=True,
        env={"NOETL_COMPLETION": script, "PATH": "/usr/bin:/bin"},
    )
    return done.stdout.split()


def test_bash_completes_verbs_options_and_choices_from_the_parser() -> None:
    assert _bash_completes(["noetl", "exec"]) == ["execute", "executions"]
    assert "--status" in _bash_completes(["noetl", "executions", "list", "--st"])
    assert _bash_completes(["noetl", "executions", "list", "--status", ""]) == [
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_completion_scripts_for_other_shells_name_every_verb(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for verb in ("executions", "logs", "rerun", "completion"):
        assert verb in script


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["completion", "fish"])
    assert exit_.value.code == EXIT_USAGE
    assert "invalid choice: 'fish'" in capsys.readouterr().err
