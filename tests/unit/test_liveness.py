"""Heartbeat bookkeeping: who is alive, who died (silent or restarted), and when a count of 0 is believed."""

from __future__ import annotations

import msgspec

from natriton_client.liveness import HeartbeatWatch, Liveness
from natriton_client.protocol import Heartbeat


def beat(service: str = "router", instance: str = "r1", boot: str = "b1", *, leaving: bool = False) -> Heartbeat:
    return Heartbeat(
        service=service, instance=instance, boot=boot, interval_ms=250, dead_after_ms=2000, leaving=leaving
    )


def test_a_copy_is_alive_until_silent_for_its_dead_after() -> None:
    liveness = Liveness(0.0)
    assert liveness.observe(beat(), 0.0) == []
    assert liveness.live("router") == 1
    assert liveness.sweep(1.9) == []
    liveness.observe(beat(), 1.9)
    assert liveness.sweep(3.8) == []  # heard at 1.9: alive until 3.9
    dead = liveness.sweep(4.0)
    assert [(p.service, p.instance, p.boot) for p in dead] == [("router", "r1", "b1")]
    assert liveness.live("router") == 0
    assert liveness.sweep(10.0) == [], "a dead copy is reported once"


def test_a_restart_under_the_same_instance_id_is_a_death() -> None:
    liveness = Liveness(0.0)
    liveness.observe(beat(boot="b1"), 0.0)
    lost = liveness.observe(beat(boot="b2"), 0.5)
    assert [p.boot for p in lost] == ["b1"]
    assert liveness.live("router") == 1


def test_a_leaving_copy_is_forgotten_without_being_reported() -> None:
    liveness = Liveness(0.0)
    liveness.observe(beat(), 0.0)
    assert liveness.observe(beat(leaving=True), 0.1) == []
    assert liveness.live("router") == 0
    assert liveness.sweep(100.0) == []


def test_none_alive_is_believed_only_after_the_settle_time() -> None:
    liveness = Liveness(10.0, settle_s=2.0)
    assert not liveness.none_alive("preprocess", 11.0), "too early: a live copy may not have spoken yet"
    assert liveness.none_alive("preprocess", 12.0)
    liveness.observe(beat("preprocess", "p1"), 12.0)
    assert not liveness.none_alive("preprocess", 12.1)


def test_copies_are_counted_per_service() -> None:
    liveness = Liveness(0.0)
    for service, instance in [("router", "r1"), ("router", "r2"), ("postprocess", "q1")]:
        liveness.observe(beat(service, instance), 0.0)
    assert (liveness.live("router"), liveness.live("postprocess"), liveness.live("preprocess")) == (2, 1, 0)


def test_refresh_forgives_our_own_silence() -> None:
    """While our connection was down nobody could be heard: after it is back, everyone gets a fresh dead_after."""
    liveness = Liveness(0.0)
    liveness.observe(beat(), 0.0)
    liveness.refresh(5.0)
    assert liveness.sweep(6.0) == []
    assert len(liveness.sweep(7.1)) == 1


class _Message:
    """What HeartbeatWatch reads of a NATS message."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        self.data = msgspec.json.encode(heartbeat)


async def test_the_watch_says_when_the_last_copy_of_a_service_leaves() -> None:
    left: list[str] = []
    watch = HeartbeatWatch("natriton.heartbeat.>", on_lost=lambda dead: None, on_last_left=left.append)
    for message in (beat(instance="r1"), beat(instance="r2"), beat("postprocess", "p1")):
        await watch._on_message(_Message(message))
    await watch._on_message(_Message(beat(instance="r1", leaving=True)))
    assert left == [], "another router copy is still there"
    await watch._on_message(_Message(beat(instance="r2", leaving=True)))
    assert left == ["router"]
    await watch._on_message(_Message(beat(instance="r2", leaving=True)))
    assert left == ["router"], "said once: nobody was left to leave"
    assert watch.live("postprocess") == 1
