"""The checked-in trees are exactly what the renderer produces, and the renderer is stable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from noetl_k8s import PROFILES, build_manifests, diff_all, load_documents, render_all, render_tree, write_all
from noetl_k8s._render import TREE_DIRS

ROOT = Path(__file__).resolve().parents[3]


def test_checked_in_files_equal_renderer_output() -> None:
    problems = diff_all(ROOT)
    assert problems == [], "run `.venv/bin/noetl-k8s render` and commit the result:\n" + "\n".join(problems)


def test_rendering_twice_gives_identical_text() -> None:
    assert render_all(ROOT) == render_all(ROOT)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_yaml_loads_back_to_the_built_objects(profile: str) -> None:
    made = PROFILES[profile]()
    texts = render_tree(made)
    for name, docs in build_manifests(made).items():
        assert load_documents(texts[name]) == docs, name


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_kustomization_lists_every_file_but_the_ones_applied_separately(profile: str) -> None:
    texts = render_tree(PROFILES[profile]())
    (kustomization,) = load_documents(texts["kustomization.yaml"])
    files = set(texts) - {"kustomization.yaml"}
    separate = files - set(kustomization["resources"])
    expected = {"kind": {"keda.yaml"}}.get(profile, {"secrets.yaml"})
    assert separate == expected
    assert set(kustomization["resources"]) <= files


def _copy_generated(tmp_path: Path) -> Path:
    for path in render_all(ROOT):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return tmp_path


def test_diff_reports_a_hand_edit_a_missing_file_and_a_stray_file(tmp_path: Path) -> None:
    root = _copy_generated(tmp_path)
    (root / "k8s/base/worker-system.yaml").write_text(
        (root / "k8s/base/worker-system.yaml").read_text().replace("memory: 768Mi", "memory: 1Gi")
    )
    (root / "k8s/overlays/gke/keda.yaml").unlink()
    (root / "k8s/overlays/kind/extra.yaml").write_text("kind: ConfigMap\n")
    problems = diff_all(root)
    assert problems == [
        "k8s/base/worker-system.yaml: differs from the renderer's output",
        "k8s/overlays/gke/keda.yaml: missing",
        "k8s/overlays/kind/extra.yaml: not produced by the renderer",
    ]


def test_write_all_repairs_the_tree(tmp_path: Path) -> None:
    root = _copy_generated(tmp_path)
    (root / TREE_DIRS["base"] / "namespace.yaml").write_text("edited\n")
    (root / TREE_DIRS["kind"] / "stale.yaml").write_text("kind: ConfigMap\n")
    changed = {p.relative_to(root).as_posix() for p in write_all(root)}
    assert changed == {"k8s/base/namespace.yaml", "k8s/overlays/kind/stale.yaml"}
    assert diff_all(root) == []
