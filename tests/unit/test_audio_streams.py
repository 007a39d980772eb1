"""Who owns a live audio stream: rendezvous hashing over the settled ingest copies."""

from __future__ import annotations

from collections import Counter

from natriton_ingest.audio_streams import owner_of

STREAMS = [f"mic-{i}" for i in range(2000)]


def test_every_copy_picks_the_same_owner_whatever_order_it_knows_the_copies_in() -> None:
    copies = ["a1", "b2", "c3"]
    assert all(owner_of(s, copies) == owner_of(s, list(reversed(copies))) for s in STREAMS)


def test_streams_are_shared_out_evenly() -> None:
    counts = Counter(owner_of(s, ["a1", "b2", "c3", "d4"]) for s in STREAMS)
    assert set(counts) == {"a1", "b2", "c3", "d4"}
    assert all(400 < n < 600 for n in counts.values()), counts


def test_a_copy_that_joins_takes_streams_only_for_itself_and_one_that_leaves_gives_up_only_its_own() -> None:
    before = {s: owner_of(s, ["a1", "b2", "c3"]) for s in STREAMS}
    joined = {s: owner_of(s, ["a1", "b2", "c3", "d4"]) for s in STREAMS}
    moved = [s for s in STREAMS if before[s] != joined[s]]
    assert all(joined[s] == "d4" for s in moved) and 350 < len(moved) < 650
    left = {s: owner_of(s, ["a1", "c3"]) for s in STREAMS}
    assert all(left[s] == before[s] for s in STREAMS if before[s] != "b2")
