"""Snowflake layout, node-id derivation and the clock-back rule (architecture.md §3)."""

import pytest
from noetl_common import Snowflake, node_id_from_env, parse_id
from noetl_common._snowflake import DEFAULT_EPOCH_MS, fnv1a_64


def test_layout_matches_known_id() -> None:
    # 2024-01-02T00:00:00Z = epoch + 86_400_000 ms, node 5, first id of that ms.
    gen = Snowflake(node_id=5, clock_ms=lambda: DEFAULT_EPOCH_MS + 86_400_000)
    assert gen.next_id() == (86_400_000 << 22) | (5 << 12) | 0 == 362387865620480
    assert gen.next_id() == 362387865620481
    assert gen.decompose(362387865620481) == (DEFAULT_EPOCH_MS + 86_400_000, 5, 1)


def test_sequence_wrap_waits_for_next_millisecond() -> None:
    ticks = iter([1000] * 4098 + [1001] * 10)
    gen = Snowflake(node_id=0, epoch_ms=0, clock_ms=lambda: next(ticks))
    ids = [gen.next_id() for _ in range(4097)]
    assert len(set(ids)) == 4097
    assert ids == sorted(ids)
    assert gen.decompose(ids[-1])[0] == 1001
    assert gen.decompose(ids[-2]) == (1000, 0, 4095)


def test_clock_going_backwards_never_goes_back() -> None:
    ticks = iter([5000, 4000, 4000, 5001])
    gen = Snowflake(node_id=1, epoch_ms=0, clock_ms=lambda: next(ticks))
    ids = [gen.next_id() for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [gen.decompose(i)[0] for i in ids] == [5000, 5000, 5000, 5001]


def test_node_id_derivation_order() -> None:
    assert node_id_from_env({"NOETL_SNOWFLAKE_NODE_ID": "7", "NOETL_SHARD_ID": "9"}) == 7
    assert node_id_from_env({"NOETL_SHARD_ID": "9", "WORKER_ID": "w"}) == 9
    assert node_id_from_env({"WORKER_ID": "worker-a"}) == fnv1a_64(b"worker-a") & 0x3FF
    # FNV-1a-64 reference vector: "a" -> 0xaf63dc4c8601ec8c
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    with pytest.raises(ValueError, match="NOETL_SNOWFLAKE_NODE_ID"):
        node_id_from_env({"NOETL_SNOWFLAKE_NODE_ID": "2000"})


def test_epoch_override_and_parse_id() -> None:
    gen = Snowflake.from_env({"NOETL_SNOWFLAKE_EPOCH_MS": "0", "NOETL_SNOWFLAKE_NODE_ID": "3"})
    assert gen.epoch_ms == 0 and gen.node_id == 3
    assert parse_id("123") == 123 and parse_id(123) == 123
    for bad in ("abc", -1, 0, True, None, "1e3", 1 << 63):
        with pytest.raises(ValueError):
            parse_id(bad)


def test_set_node_switches_the_node_bits_of_later_ids() -> None:
    ids = Snowflake(5)
    before = ids.next_id()
    ids.set_node(700)
    after = ids.next_id()
    assert ids.decompose(before)[1] == 5 and ids.decompose(after)[1] == 700
    assert after > before
    with pytest.raises(ValueError):
        ids.set_node(1024)
