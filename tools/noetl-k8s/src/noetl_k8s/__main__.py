"""``noetl-k8s render|check|validate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._helm import CHART_DIR, check_chart
from ._render import TREE_DIRS, diff_all, load_documents, write_all
from ._validate import K8S_VERSION, validate_documents


def _repo_root(start: Path) -> Path:
    for path in [start, *start.parents]:
        if (path / "k8s").is_dir() and (path / "tools" / "noetl-k8s").is_dir():
            return path
    raise SystemExit("noetl-k8s: run inside the repository (or pass --root)")


def _validate_tree(directory: Path, version: str) -> list[str]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += load_documents(path.read_text())
    return [f"{directory}: {problem}" for problem in validate_documents(docs, version)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="noetl-k8s", description=__doc__)
    parser.add_argument("--root", type=Path, help="repository root (default: found from the cwd)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("render", help="write k8s/{base,overlays/*}, charts/noetl/values.yaml and the dashboard")
    sub.add_parser(
        "check", help="fail if any generated file differs, a manifest is invalid or the chart drifted"
    )
    validate = sub.add_parser("validate", help="validate directories of manifests (one tree per directory)")
    validate.add_argument("dirs", nargs="+", type=Path)
    validate.add_argument("--k8s-version", default=K8S_VERSION)
    args = parser.parse_args(argv)

    if args.command == "validate":
        problems = [p for d in args.dirs for p in _validate_tree(d, args.k8s_version)]
    else:
        root = args.root or _repo_root(Path.cwd())
        if args.command == "render":
            for path in write_all(root):
                print(f"wrote {path.relative_to(root)}")
            return
        problems = diff_all(root)
        problems += [p for tree in TREE_DIRS.values() for p in _validate_tree(root / tree, K8S_VERSION)]
        problems += check_chart(root / CHART_DIR)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise SystemExit(1)
    print("ok")


if __name__ == "__main__":
    main()
