"""The in-process near cache in front of Redis: copies expire after their TTL, the least recently used go first."""

from __future__ import annotations

from natriton.cache import NearCache


def test_a_copy_answers_until_its_ttl_then_is_gone() -> None:
    near: NearCache[str] = NearCache(ttl_s=2.0, max_entries=10)
    near.put("k", "answer", now=100.0)
    assert near.get("k", now=101.9) == "answer"
    assert near.get("k", now=102.0) is None
    assert len(near) == 0 and near.hits == 1
    assert near.get("other", now=100.0) is None


def test_the_least_recently_used_go_first() -> None:
    near: NearCache[int] = NearCache(ttl_s=10.0, max_entries=2)
    near.put("a", 1, now=0.0)
    near.put("b", 2, now=0.0)
    assert near.get("a", now=1.0) == 1  # a is now the most recently used
    near.put("c", 3, now=1.0)
    assert (near.get("a", now=1.0), near.get("b", now=1.0), near.get("c", now=1.0)) == (1, None, 3)
    near.put("a", 4, now=2.0)  # a newer copy replaces the old one
    assert near.get("a", now=2.0) == 4 and len(near) == 2


def test_ttl_zero_keeps_nothing() -> None:
    near: NearCache[int] = NearCache(ttl_s=0.0, max_entries=10)
    near.put("a", 1, now=0.0)
    assert near.get("a", now=0.0) is None and len(near) == 0
