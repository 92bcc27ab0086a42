"""The garbage collector of a long-running service: start-up's objects set aside, young
objects collected less often.

Every batch a service handles allocates thousands of containers (decoded events, rows,
messages). With CPython's defaults each 700 of them start a young collection, and every
few of those a full one over the whole heap: the modules, the app and its routes, the
config, all made at start-up and alive for good. Measured under the event pipeline, the
control-api spent about a tenth of its CPU there (docs/performance.md, "Garbage
collection"). :func:`settle_heap` runs once start-up is done: it collects, moves what is
left to the permanent generation (``gc.freeze``: never scanned again), and raises the young
threshold so most of a batch's objects are freed by reference counting before a collection
looks at them. Cycles are still collected; only start-up's objects are never reclaimed,
and they live as long as the process anyway.
"""

from __future__ import annotations

import atexit
import gc

#: allocations (net of frees) of tracked objects between young collections (CPython: 700)
YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Call once, when start-up is done and before the first request or message."""
    gc.collect()
    gc.freeze()
    # at exit the frozen objects go back under the collector, so the interpreter's last
    # collection frees them as it would have: extensions that count their objects at exit
    # (nanobind's leak check, in DuckDB) would otherwise report each one as leaked on stderr
    atexit.register(gc.unfreeze)
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
