"""Build the reference WASM plug-ins from source into ``plugins/wasm/`` (committed).

    .venv/bin/python plugins/build.py            # build everything
    .venv/bin/python plugins/build.py --check    # rebuild into a temp dir, compare with wasm/

WAT sources compile with ``wasmtime.wat2wasm`` (no toolchain). C sources need the
``ziglang`` package (``uv sync --group plugins``): ``python -m ziglang cc
--target=wasm32-freestanding``. Zig's caches go to ``plugins/.zig-cache`` (ignored). The
output is reproducible, so ``--check`` compares bytes. ``wasm/<path>.wasm`` is what the
control-api seeds as ``<path>`` version 1 (``NOETL_PLUGIN_SEED_DIR=plugins/wasm``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import wasmtime

HERE = Path(__file__).resolve().parent
DIST = HERE / "wasm"
INCLUDE = HERE / "include"
ZIG_CACHE = HERE / ".zig-cache"

#: Code generation of the C plug-ins. SIMD128, bulk memory (memory.copy/fill for memcpy and
#: memset), sign extension, non-trapping float-to-int and multi-value are all on by default
#: in wasmtime; a plug-in built with them runs on any engine the host configures.
OPTIMISE = (
    "-O3",
    "-msimd128",
    "-mbulk-memory",
    "-msign-ext",
    "-mnontrapping-fptoint",
    "-mmutable-globals",
)

#: registry path -> source file (relative to plugins/)
PLUGINS: dict[str, str] = {
    "system/echo": "system/echo/echo.wat",
    "system/materialiser": "system/materialiser/materialiser.wat",
    "arrow/filter_sum": "arrow/filter_sum/filter_sum.c",
}


def have_zig() -> bool:
    """True when the ``ziglang`` package is importable by this interpreter."""
    return importlib.util.find_spec("ziglang") is not None


def build_one(path: str, out_dir: Path) -> Path:
    """Build the plug-in registered as ``path`` into ``out_dir/<path>.wasm``."""
    source = HERE / PLUGINS[path]
    target = out_dir / f"{path}.wasm"
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".wat":
        target.write_bytes(wasmtime.wat2wasm(source.read_text()))
        return target
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(ZIG_CACHE), "ZIG_LOCAL_CACHE_DIR": str(ZIG_CACHE)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "--target=wasm32-freestanding",
            *OPTIMISE,
            "-nostdlib",
            "-Wl,--no-entry",
            "-Wl,--export-dynamic",
            "-Wl,--strip-all",
            # 64 KiB of stack instead of 1 MiB: the module starts at 2 pages, not 17
            "-Wl,-z,stack-size=65536",
            f"-I{INCLUDE}",
            str(source),
            "-o",
            str(target),
        ],
        check=True,
        env=env,
        cwd=HERE,
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare a fresh build with wasm/")
    args = parser.parse_args(argv)
    paths = [p for p in PLUGINS if PLUGINS[p].endswith(".wat") or have_zig()]
    skipped = sorted(set(PLUGINS) - set(paths))
    if skipped:
        print(f"ziglang not installed; not building {', '.join(skipped)} (uv sync --group plugins)")
    if not args.check:
        for path in paths:
            print(f"built {build_one(path, DIST).relative_to(HERE)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            p for p in paths if build_one(p, Path(tmp)).read_bytes() != (DIST / f"{p}.wasm").read_bytes()
        ]
    if stale:
        print(f"wasm/ is stale for: {', '.join(stale)}; run plugins/build.py")
        return 1
    print(f"wasm/ matches a fresh build of {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
