"""Parsing playbooks for the application layer, with a cache per catalog version.

A catalog (path, version) is immutable, so its parsed Playbook can be kept; the cache
saves a YAML parse and validation on every event that advances an execution.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import yaml

from .._errors import InvalidPlaybook
from ..dsl import Playbook, PlaybookError, UnknownKeys, parse_playbook


def parse(text: str, unknown_keys: UnknownKeys = "ignore") -> Playbook:
    """Parse and validate playbook text; raises InvalidPlaybook with ``extra={step, field}``.

    ``unknown_keys``: registration passes the configured check; a playbook read back from the
    catalog was checked when it was registered, so by default its keys are not looked at."""
    try:
        return parse_playbook(text, unknown_keys=unknown_keys)
    except PlaybookError as exc:
        raise InvalidPlaybook(str(exc), {"step": exc.step, "field": exc.field}) from None
    except yaml.YAMLError as exc:
        raise InvalidPlaybook(f"malformed YAML: {exc}", {"step": None, "field": None}) from None
    except (RecursionError, ValueError, TypeError) as exc:
        # the parser should turn every bad document into PlaybookError; this is the net
        raise InvalidPlaybook(f"invalid playbook: {exc}", {"step": None, "field": None}) from None


class PlaybookCache:
    """A small LRU of parsed playbooks keyed by (path, version)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], Playbook] = OrderedDict()

    def get(self, path: str, version: int, content: str) -> Playbook:
        key = (path, version)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found
        playbook = parse(content)
        self._items[key] = playbook
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return playbook

    def cached(self, path: str, version: int) -> Playbook | None:
        """The parsed playbook if it is in the cache (saves reading the catalog row)."""
        found = self._items.get((path, version))
        if found is not None:
            self._items.move_to_end((path, version))
        return found

    def put(self, path: str, version: int, playbook: Any) -> None:
        self._items[(path, version)] = playbook
        if len(self._items) > self._size:
            self._items.popitem(last=False)
