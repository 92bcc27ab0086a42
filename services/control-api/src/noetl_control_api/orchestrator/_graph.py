"""Static routing graph of a playbook: edges (explicit and implicit-to-end) and reachability."""

from __future__ import annotations

from collections import deque

from ..dsl import Arc, Playbook, Step

END = "end"


def out_arcs(playbook: Playbook, step: Step) -> list[Arc]:
    """The step's arcs; a step with a tool (or loop) and no ``next`` continues to ``end``, unless
    it is the playbook's final step (entered once everything else, ``end`` too, is done)."""
    if step.next is not None:
        return step.next.arcs
    implicit = step.name not in (END, playbook.final_step)
    if (step.has_tool or step.loop is not None) and implicit and playbook.has_step(END):
        return [Arc(step=END)]
    return []


def graph_of(playbook: Playbook) -> Graph:
    """The playbook's graph, built once per parsed playbook and kept on it."""
    graph: Graph | None = playbook.__dict__.get("_graph")
    if graph is None:
        graph = playbook.__dict__["_graph"] = Graph(playbook)
    return graph


class Graph:
    """Edges, predecessors and transitive reachability of one playbook (reachability is
    filled in on demand); never changed once built, so one serves every call."""

    def __init__(self, playbook: Playbook) -> None:
        self.order = {step.name: i for i, step in enumerate(playbook.steps)}
        self.edges: dict[str, list[str]] = {
            step.name: [arc.step for arc in out_arcs(playbook, step)] for step in playbook.steps
        }
        self.preds: dict[str, set[str]] = {name: set() for name in self.order}
        for source, targets in self.edges.items():
            for target in targets:
                self.preds[target].add(source)
        self._reach: dict[str, frozenset[str]] = {}

    def is_join(self, step: str) -> bool:
        """A fan-in point: more than one step routes to it, so it waits as a barrier."""
        return len(self.preds.get(step, ())) > 1

    def reaches(self, source: str, target: str) -> bool:
        """True when some path of one or more arcs leads from ``source`` to ``target``."""
        if source not in self._reach:
            seen: set[str] = set()
            queue = deque(self.edges.get(source, ()))
            while queue:
                name = queue.popleft()
                if name not in seen:
                    seen.add(name)
                    queue.extend(self.edges.get(name, ()))
            self._reach[source] = frozenset(seen)
        return target in self._reach[source]
