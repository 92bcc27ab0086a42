"""An import-linter contract type: no module of the checked packages imports itself through
a chain of imports.

import-linter's own ``acyclic_siblings`` compares the children of a package with each
other, so it misses a package whose ``__init__`` imports a module that imports the package
back. This contract looks at the whole module graph grimp builds (strongly connected
components, Tarjan's algorithm) and names one loop of each tangle, with line numbers.

Used from ``[tool.importlinter]`` in pyproject.toml; ``make lint`` runs it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import pairwise
from typing import cast

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class NoCyclesContract(Contract):
    """Options: ``packages`` (default: every root package) whose modules must import no loop."""

    type_name = "no_cycles"

    packages = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = cast("list[str] | None", self.packages) or self.session_options["root_packages"]
        modules: set[str] = set()
        for root in roots:
            modules |= {root, *graph.find_descendants(root)}
        imports = {
            module: sorted(graph.find_modules_directly_imported_by(module) & modules) for module in modules
        }
        output.verbose_print(verbose, f"Searching {len(modules)} modules for import cycles...")
        cycles = [_one_loop(component, imports, graph) for component in _tangles(imports)]
        return ContractCheck(kept=not cycles, metadata={"cycles": sorted(cycles)})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"{cycle[0][0]} imports itself through:")
            for importer, imported, lines in cycle:
                output.print_error(f"  {importer} -> {imported} (l. {lines})", bold=False)
            output.new_line()


def _tangles(imports: dict[str, list[str]]) -> list[list[str]]:
    """Every set of two or more modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(imports):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work: list[tuple[str, Iterable[str]]] = [(start, iter(imports[start]))]
        while work:
            module, pending = work[-1]
            for imported in pending:
                if imported not in index:
                    index[imported] = low[imported] = len(index)
                    stack.append(imported)
                    on_stack.add(imported)
                    work.append((imported, iter(imports[imported])))
                    break
                if imported in on_stack:
                    low[module] = min(low[module], index[imported])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _one_loop(
    component: list[str], imports: dict[str, list[str]], graph: grimp.ImportGraph
) -> list[tuple[str, str, str]]:
    """The shortest loop through the first module of ``component``, as (importer, imported, lines)."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for imported in imports[module]:
            if imported not in members or imported in came_from:
                continue
            came_from[imported] = module
            if imported == start:
                queue.clear()
                break
            queue.append(imported)
    chain = [start]
    while len(chain) == 1 or chain[-1] != start:
        chain.append(came_from[chain[-1]])
    chain.reverse()
    return [(a, b, _lines(graph, a, b)) for a, b in pairwise(chain)]


def _lines(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    return ", ".join(str(detail["line_number"]) for detail in details) or "?"
