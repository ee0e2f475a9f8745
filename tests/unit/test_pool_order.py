"""The order a request tries a pool's members in: strategies and session affinity (what
tests/e2e/test_pools.py once checked with hundreds of requests through processes)."""

from __future__ import annotations

import random
from collections import Counter

from llmgate.request_path.failover import affinity_key
from llmgate.request_path.pool import PoolState
from llmgate.request_path.routing import Route
from llmgate.settings import ProviderSettings


def route(pid: str, weight: int = 1) -> Route:
    return Route(ProviderSettings(id=pid, type="openai", base_url=f"http://{pid}.invalid/v1", weight=weight), "m",
                 "alias")


A, B, C = route("a", weight=3), route("b"), route("c")


def first(pool: PoolState, strategy: str, affinity: str | None = None, routes=(A, B, C)) -> str:
    return next(pool.order("m", list(routes), strategy, affinity)).provider.id


def test_round_robin_rotates_through_every_member():
    pool = PoolState()
    assert [first(pool, "round-robin") for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert [r.provider.id for r in pool.order("m", [A, B, C], "round-robin", None)] == ["a", "b", "c"]


def test_fill_first_keeps_config_order():
    assert {first(PoolState(), "fill-first") for _ in range(5)} == {"a"}


def test_least_busy_prefers_idle_members_then_config_order():
    pool = PoolState()
    assert first(pool, "least-busy") == "a"
    slot = pool.acquire("a", "")
    assert [r.provider.id for r in pool.order("m", [A, B, C], "least-busy", None)] == ["b", "c", "a"]
    pool.release(slot)
    assert first(pool, "least-busy") == "a"


def test_weighted_follows_the_weights():
    random.seed(7)
    got = Counter(first(PoolState(), "weighted", routes=(A, B)) for _ in range(400))
    assert got["a"] + got["b"] == 400 and 260 <= got["a"] <= 340, got  # 3:1 -> 300 expected, sd ~ 8.7


def test_affinity_keeps_a_session_on_one_member_and_spreads_sessions():
    pool = PoolState()
    home = first(pool, "round-robin", "s1")
    assert {first(pool, "round-robin", "s1") for _ in range(9)} == {home}
    assert {first(pool, "round-robin", f"session-{i}") for i in range(30)} == {"a", "b", "c"}


def test_affinity_falls_to_the_same_second_member_while_home_is_out():
    order = [r.provider.id for r in PoolState().order("m", [A, B, C], "round-robin", "s1")]
    without_home = [r.provider.id for r in PoolState().order("m", [r for r in (A, B, C) if r.provider.id != order[0]],
                                                            "round-robin", "s1")]
    assert without_home == order[1:]  # rendezvous hashing: the others keep their order


def test_affinity_keys():
    headers = {"X-Session": "abc"}
    assert affinity_key("header:X-Session", headers, None) == "abc"
    assert affinity_key("header:X-Other", headers, None) is None
    assert affinity_key("prompt_cache_key", {}, {"prompt_cache_key": "conv-1"}) == "conv-1"
    assert affinity_key("prompt_cache_key", {}, {"prompt_cache_key": ""}) is None
    assert affinity_key(None, headers, {"prompt_cache_key": "conv-1"}) is None
