"""A settled heap: start-up's objects frozen, later cycles still reclaimed."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, weakref
from noetl_common import settle_heap

class Node:
    pass

settle_heap()
frozen = gc.get_freeze_count()
node = Node()
node.self = node  # a cycle made after start-up
gone = []
weakref.finalize(node, gone.append, True)
del node
gc.collect()
print(frozen > 1000, gc.get_threshold()[0], gone == [True])
"""


def test_settle_heap_freezes_start_up_and_later_cycles_are_still_collected() -> None:
    # in a process of its own: the collector's settings are process-wide
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "10000", "True"]
