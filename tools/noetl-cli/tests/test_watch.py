"""The ``--watch`` view: step lines from events, redrawn in place on a terminal."""

from __future__ import annotations

import io

from noetl_cli._watch import Watcher


def _events() -> list[dict[str, object]]:
    return [
        {"event_type": "step.enter", "step": "start", "status": "RUNNING"},
        {"event_type": "command.started", "step": "start"},
        {"event_type": "command.completed", "step": "start"},
        {"event_type": "step.enter", "step": "skip_me", "status": "SKIPPED"},
        {"event_type": "command.started", "step": "boom"},
        {"event_type": "command.failed", "step": "boom", "context": {"error": {"message": "KeyError: x"}}},
        {"event_type": "playbook.failed", "context": {"error": "step 'boom' failed"}},
    ]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    watcher = Watcher(out, live=False)
    for event in _events():
        watcher.feed(event)
    lines = out.getvalue().splitlines()
    assert "\x1b[" not in out.getvalue()
    assert any("✓ start" in line and "completed" in line for line in lines)
    assert any("- skip_me" in line and "skipped" in line for line in lines)
    assert "✗ boom" in lines[-1] and "KeyError: x" in lines[-1]
    assert watcher.status == "FAILED" and watcher.error == "step 'boom' failed"


def test_live_view_redraws_one_line_per_step() -> None:
    out = io.StringIO()
    watcher = Watcher(out, live=True)
    for event in _events():
        watcher.feed(event)
    text = out.getvalue()
    assert "\x1b[1F\x1b[J" in text and "\x1b[3F\x1b[J" in text  # cursor back over the drawn block
    final_block = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert [line.split()[1] for line in final_block] == ["start", "skip_me", "boom"]
