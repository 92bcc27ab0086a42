"""Re-takes the run inspector's screenshots in ``docs/inspector/`` (``make screenshots``).

Starts the whole suite on loopback the way the end-to-end tests do (:func:`suite_stack`:
embedded Postgres and nats-server, the four services), registers the playbooks the pictures
show, runs them, signs in through ``/ui/login`` with an operator token in headless Debian
chromium (:func:`noetl_dev.browser.chromium`) and writes:

* ``runs.png``: the runs list;
* ``loop.png``: a finished parallel loop (``e2e/loop_many``, 1,000 items) collapsed into one
  timeline row, the loop step selected;
* ``fan-in.png``: ``conformance/own/routing``, two arcs fired into ``join``, ``join`` selected;
* ``failure.png``: a failed run (``e2e/chatty``): its error and step, the failed step's error
  and logs;
* ``restart.png``: the restart dialog on that run after a dry run from the failed step.

    .venv/bin/python -m noetl_dev.screenshots               # into docs/inspector/
    .venv/bin/python -m noetl_dev.screenshots --out /tmp/shots --loop-items 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from noetl_cli import Api

from .browser import chromium
from .testing import repository_root, suite_stack

ROOT = repository_root()
#: the playbooks the pictures show, from the end-to-end and the conformance sets
PLAYBOOKS = (
    ROOT / "tests" / "e2e" / "playbooks" / "loop_many.yaml",
    ROOT / "tests" / "e2e" / "playbooks" / "chatty.yaml",
    ROOT / "tests" / "conformance" / "playbooks" / "routing.yaml",
    ROOT / "tests" / "conformance" / "playbooks" / "child.yaml",
    ROOT / "tests" / "conformance" / "playbooks" / "parent.yaml",
)
OUT = ROOT / "docs" / "inspector"
#: the browser window: wide enough for the split of steps and detail, as in the browser test
WIDTH = 1300
#: how long the browser waits for a condition on the page (ms); a bound, not a pace
WAIT_MS = 60_000


def _finished(api: Api, path: str, expected: str, payload: dict[str, Any] | None = None) -> str:
    """Run ``path`` to its end; its execution id. The end must be ``expected``."""
    started = api.execute(path, payload=payload)
    done = api.wait(started["execution_id"], timeout=600)
    if done["status"] != expected:
        raise RuntimeError(f"{path} ended {done['status']}, not {expected}: {done}")
    return str(done["execution_id"])


def _runs(api: Api, loop_items: int) -> dict[str, str]:
    """The executions the pictures show, oldest first (the runs list shows them newest first)."""
    for file in PLAYBOOKS:
        api.register_file(file)
    return {
        "fan-in": _finished(api, "conformance/own/routing", "COMPLETED"),
        "parent": _finished(api, "conformance/own/parent", "COMPLETED"),
        "failure": _finished(api, "e2e/chatty", "FAILED"),
        "loop": _finished(api, "e2e/loop_many", "COMPLETED", {"count": loop_items}),
    }


def _sign_in(browser: Any, api_url: str, token: str) -> Any:
    """A fresh page signed in through the login form."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"{api_url}/ui")
    page.wait_for_url("**/ui/login")
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_selector("#runs tbody tr")
    return page


def _run_page(page: Any, api_url: str, execution_id: str, step: str) -> None:
    """A finished run's page, drawn, its replay badge answered, ``step`` selected and its logs read."""
    page.goto(f"{api_url}/ui/runs/{execution_id}")
    page.wait_for_selector("body[data-ready='1'][data-complete='1']")
    page.wait_for_selector("#replay.ok, #replay.bad")
    page.click(f"#steps tr[data-step='{step}']")
    page.wait_for_function("() => { const l = document.querySelector('#logs'); return l && l.textContent !== 'loading…'; }")


def _shoot(page: Any, out: Path, name: str, *, height: int, full_page: bool) -> Path:
    page.set_viewport_size({"width": WIDTH, "height": height})
    target = out / f"{name}.png"
    page.screenshot(path=str(target), full_page=full_page, animations="disabled", caret="hide")
    print(f"screenshots: {target}", flush=True)
    return target


def take(api_url: str, token: str, runs: dict[str, str], out: Path) -> list[Path]:
    """The five pictures of the inspector, from ``runs`` (as :func:`_runs` returns them)."""
    out.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    with chromium() as browser:
        page = _sign_in(browser, api_url, token)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # a short window: the whole page is the list, the picture as tall as its rows
        taken.append(_shoot(page, out, "runs", height=300, full_page=True))
        for name, step in (("loop", "square"), ("fan-in", "join"), ("failure", "explode")):
            _run_page(page, api_url, runs[name], step)
            taken.append(_shoot(page, out, name, height=1000, full_page=True))
        page.click("#restart")
        page.select_option("#restart-step", "explode")
        page.click("#restart-preview")
        page.wait_for_selector("#restart-rerun")
        taken.append(_shoot(page, out, "restart", height=700, full_page=False))
        if errors:
            raise RuntimeError(f"the page raised: {errors}")
    return taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the PNGs go (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--loop-items", type=int, default=1000, help="iterations of the pictured loop")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="noetl-screenshots-") as tmp:
        # database_prefix=None: always embedded servers, so the runs list holds only these runs
        with suite_stack(Path(tmp) / "stack", database_prefix=None, ready_timeout=120.0) as stack:
            print(f"screenshots: stack up at {stack.api_url}", flush=True)
            with Api(stack.api_url, token=stack.token, timeout=120) as api:
                runs = _runs(api, args.loop_items)
                operator = str(api.create_token(name="operator", role="operator")["token"])
            take(stack.api_url, operator, runs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
