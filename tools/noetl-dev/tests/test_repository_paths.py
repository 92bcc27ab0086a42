"""The repository root and the shared conformance set are found from the package's own location."""

from __future__ import annotations

from pathlib import Path

import pytest
from noetl_dev.testing import ConformanceSetMissing, conformance_dir, repository_root


def test_the_root_is_the_workspace_of_this_checkout() -> None:
    root = repository_root()
    assert "[tool.uv.workspace]" in (root / "pyproject.toml").read_text()
    assert Path(__file__).resolve().is_relative_to(root)


def test_the_set_is_read_from_the_variable_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOETL_CONFORMANCE_DIR", str(tmp_path))
    assert conformance_dir() == tmp_path


def test_a_missing_set_is_an_error_naming_the_folder_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "absent"
    monkeypatch.setenv("NOETL_CONFORMANCE_DIR", str(missing))
    with pytest.raises(ConformanceSetMissing, match="NOETL_CONFORMANCE_DIR") as info:
        conformance_dir()
    assert str(missing) in str(info.value)


def test_the_default_is_shared_conformance_beside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOETL_CONFORMANCE_DIR", raising=False)
    expected = repository_root().parent / "shared" / "conformance"
    if expected.is_dir():
        assert conformance_dir() == expected
    else:
        with pytest.raises(ConformanceSetMissing, match="shared/conformance"):
            conformance_dir()
