"""Small guest modules (WAT) that exercise the WASM host's limits and capability ring.

Each follows guest ABI v1: ``memory``, ``alloc`` (a bump allocator that grows memory and
returns 0 when ``memory.grow`` is refused) and ``run``. Shared by the host's unit tests
and the end-to-end tests, which publish them to the registry.
"""

from __future__ import annotations

import wasmtime

_ALLOC = """
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (local.set $need
          (i32.sub (i32.div_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 65536)) (memory.size)))
        (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))
"""


def module(body: str, imports: str = "") -> bytes:
    """A guest module: ``imports``, one page of memory, the allocator, then ``body``."""
    return bytes(wasmtime.wat2wasm(f'(module {imports} (memory (export "memory") 1) {_ALLOC} {body})'))


def _packed(ptr: str, length: str) -> str:
    return f"(i64.or (i64.shl (i64.extend_i32_u {ptr}) (i64.const 32)) (i64.extend_i32_u {length}))"


#: Returns its input.
ECHO = module(
    f'(func (export "run") (param $p i32) (param $n i32) (result i64) {_packed("(local.get $p)", "(local.get $n)")})'
)

#: Spins forever: only fuel or the epoch deadline stops it.
LOOP = module('(func (export "run") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))')

#: Grows memory a page at a time until refused, then traps.
BOMB = module(
    '(func (export "run") (param i32 i32) (result i64)'
    "  (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))"
    "  unreachable)"
)

#: Traps at once.
TRAP = module('(func (export "run") (param i32 i32) (result i64) unreachable)')

#: Claims to return 1 GiB at address 0.
HUGE_OUTPUT = module(
    f'(func (export "run") (param i32 i32) (result i64) {_packed("(i32.const 0)", "(i32.const 1073741824)")})'
)

#: Returns a range past the end of its memory.
OUT_OF_BOUNDS = module(
    f'(func (export "run") (param i32 i32) (result i64) {_packed("(i32.const 65000)", "(i32.const 4096)")})'
)

#: Has no ``alloc`` export.
NO_ALLOC = bytes(
    wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (func (export "run") (param i32 i32) (result i64) (i64.const 0)))'
    )
)

_STATUS_OUT = "(i32.store8 (i32.const 8) (i32.add (i32.const 48) (local.get $s)))" + _packed(
    "(i32.const 8)", "(i32.const 1)"
)

#: Publishes its input as an event; returns the status digit ("0" ok, "3" denied ...).
PUBLISH = module(
    f'(func (export "run") (param $p i32) (param $n i32) (result i64) (local $s i32)'
    f"  (local.set $s (call $publish (local.get $p) (local.get $n))) {_STATUS_OUT})",
    imports='(import "noetl" "event_publish" (func $publish (param i32 i32) (result i32)))',
)

#: Calls event_publish with a range outside memory; returns the status digit (2).
PUBLISH_OUT_OF_BOUNDS = module(
    f'(func (export "run") (param $p i32) (param $n i32) (result i64) (local $s i32)'
    f"  (local.set $s (call $publish (i32.const 65530) (i32.const 100))) {_STATUS_OUT})",
    imports='(import "noetl" "event_publish" (func $publish (param i32 i32) (result i32)))',
)

#: result_put("out", input); returns the status digit.
RESULT_PUT = module(
    '(data (i32.const 16) "out")'
    f'(func (export "run") (param $p i32) (param $n i32) (result i64) (local $s i32)'
    f"  (local.set $s (call $put (i32.const 16) (i32.const 3) (local.get $p) (local.get $n))) {_STATUS_OUT})",
    imports='(import "noetl" "result_put" (func $put (param i32 i32 i32 i32) (result i32)))',
)


def constant(text: str) -> bytes:
    """A module whose ``run`` returns ``text`` whatever its input (a stand-in for a new release)."""
    data = text.encode()
    escaped = "".join(f"\\{byte:02x}" for byte in data)
    return module(
        f'(data (i32.const 16) "{escaped}")'
        f'(func (export "run") (param i32 i32) (result i64) {_packed("(i32.const 16)", f"(i32.const {len(data)})")})'
    )
