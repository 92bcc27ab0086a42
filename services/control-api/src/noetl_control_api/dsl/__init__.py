"""The playbook language: YAML → one validated model for both syntax generations."""

from ._errors import PlaybookError
from ._keychain import KeychainEntry
from ._keys import UnknownKeys
from ._model import Arc, Loop, Next, Playbook, Step
from ._parser import parse_playbook
from ._validate import KNOWN_KINDS, is_system_path

__all__ = [
    "KNOWN_KINDS",
    "Arc",
    "KeychainEntry",
    "Loop",
    "Next",
    "Playbook",
    "PlaybookError",
    "Step",
    "UnknownKeys",
    "is_system_path",
    "parse_playbook",
]
