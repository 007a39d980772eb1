"""Router policy logic: weighted version choice, shadow traffic, shadow agreement and the circuit breaker.

The ``natriton routes`` command line's weight parsing is tested in tests/unit/test_cli.py."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, RoutePolicy, Tensor, TensorSpec
from natriton.profiles import ClassifierProfile, DetectorProfile, EmbedderProfile, ModelProfile, RawProfile
from natriton.tensors import to_tensor
from natriton_router.logic import CircuitBreaker, choose_version, outputs_agree, shadow_version_for

CLASSIFIER = ClassifierProfile(output="LOGITS0")
DETECTOR = DetectorProfile(boxes_output="BOXES", scores_output="SCORES")
EMBEDDER = EmbedderProfile(output="LOGITS0")
RAW = RawProfile()
INFO = ModelInfo(
    name="mobilenet_v2",
    versions=("1", "2", "10"),
    task="classifier",
    max_batch_size=8,
    inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
    outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
    profile=CLASSIFIER,
)


def _policy(weights: dict[str, float] | None = None, shadow: str = "", fraction: float = 1.0) -> RoutePolicy:
    return RoutePolicy(model=INFO.name, weights=weights or {}, shadow_version=shadow, shadow_fraction=fraction)


def _choices(policy: RoutePolicy | None, n: int, seed: int = 1) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(choose_version(INFO, policy, rng) for _ in range(n))


# ------------------------------------------------------------------------------------------------
# choose_version
# ------------------------------------------------------------------------------------------------
def test_no_policy_is_the_latest_version() -> None:
    assert INFO.latest_version == "10"  # numeric, not string order
    assert _choices(None, 50) == Counter({"10": 50})


def test_empty_weights_are_the_latest_version() -> None:
    assert _choices(_policy({}), 50) == Counter({"10": 50})


def test_weights_only_for_unknown_versions_fall_back_to_latest() -> None:
    assert _choices(_policy({"3": 50, "99": 50}), 50) == Counter({"10": 50})


def test_weights_for_unknown_versions_are_ignored() -> None:
    # "99" is not ready: all traffic goes to the one ready weighted version, however big the stale weight
    assert _choices(_policy({"1": 1, "99": 1000}), 200) == Counter({"1": 200})


def test_zero_weights_are_ignored() -> None:
    assert _choices(_policy({"1": 0, "2": 5}), 200) == Counter({"2": 200})
    assert _choices(_policy({"1": 0, "2": 0}), 50) == Counter({"10": 50})  # nothing weighted: latest


def test_split_follows_the_weights() -> None:
    counts = _choices(_policy({"1": 90, "2": 10}), 10_000)
    assert set(counts) == {"1", "2"}  # never the unweighted latest
    assert 0.87 < counts["1"] / 10_000 < 0.93
    three = _choices(_policy({"1": 1, "2": 1, "10": 2}), 12_000, seed=7)
    assert 0.22 < three["1"] / 12_000 < 0.28
    assert 0.22 < three["2"] / 12_000 < 0.28
    assert 0.47 < three["10"] / 12_000 < 0.53


def test_choice_is_reproducible_with_a_seeded_rng() -> None:
    policy = _policy({"1": 50, "2": 50})
    a, b = random.Random(42), random.Random(42)
    assert [choose_version(INFO, policy, a) for _ in range(100)] == [
        choose_version(INFO, policy, b) for _ in range(100)
    ]


def test_infinite_weight_does_not_break_version_choice() -> None:
    version = choose_version(INFO, _policy({"1": float("inf"), "2": 10}), random.Random(0))
    assert version in INFO.versions


# ------------------------------------------------------------------------------------------------
# shadow_version_for
# ------------------------------------------------------------------------------------------------
def _shadows(policy: RoutePolicy | None, primary: str, n: int, seed: int = 3) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(shadow_version_for(INFO, policy, primary, rng) for _ in range(n))


def test_no_policy_or_no_shadow_version_mirrors_nothing() -> None:
    assert _shadows(None, "10", 20) == Counter({"": 20})
    assert _shadows(_policy({"1": 1}), "10", 20) == Counter({"": 20})


def test_shadow_is_mirrored_when_fraction_is_one() -> None:
    assert _shadows(_policy(shadow="2", fraction=1.0), "10", 100) == Counter({"2": 100})


def test_shadow_is_never_the_primary() -> None:
    assert _shadows(_policy(shadow="2", fraction=1.0), "2", 100) == Counter({"": 100})


def test_shadow_must_be_a_ready_version() -> None:
    assert _shadows(_policy(shadow="3", fraction=1.0), "10", 100) == Counter({"": 100})


def test_shadow_fraction_zero_mirrors_nothing() -> None:
    assert _shadows(_policy(shadow="2", fraction=0.0), "10", 500) == Counter({"": 500})


def test_shadow_fraction_is_respected() -> None:
    counts = _shadows(_policy(shadow="1", fraction=0.25), "10", 10_000)
    assert set(counts) == {"", "1"}
    assert 0.22 < counts["1"] / 10_000 < 0.28


# ------------------------------------------------------------------------------------------------
# outputs_agree
# ------------------------------------------------------------------------------------------------
def _out(*arrays: np.ndarray, name: str = "LOGITS") -> tuple[Tensor, ...]:
    return tuple(to_tensor(f"{name}{i}", a) for i, a in enumerate(arrays))


def test_classifiers_agree_on_the_same_top_class_with_other_values() -> None:
    primary = _out(np.array([[0.1, 5.0, 2.0]], np.float32))
    shadow = _out(np.array([[-3.0, 0.9, 0.8]], np.float32))  # very different logits, same argmax
    assert outputs_agree(CLASSIFIER, primary, shadow)
    assert not outputs_agree(RAW, primary, shadow)  # the profile decides how to compare


def test_classifiers_disagree_on_another_top_class() -> None:
    primary = _out(np.array([[0.1, 5.0, 2.0]], np.float32))
    shadow = _out(np.array([[0.1, 5.0, 5.1]], np.float32))  # close values, other argmax
    assert not outputs_agree(CLASSIFIER, primary, shadow)


def test_classifiers_compare_every_row_of_a_batch() -> None:
    primary = _out(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    assert outputs_agree(CLASSIFIER, primary, _out(np.array([[9.0, 0.0], [0.0, 9.0]], np.float32)))
    assert not outputs_agree(CLASSIFIER, primary, _out(np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)))


def test_classifier_with_labels_and_image_compares_the_same_way() -> None:
    profile = ClassifierProfile(output="LOGITS0", labels=("a", "b", "c"), softmax=False)
    primary = _out(np.array([[0.1, 0.7, 0.2]], np.float32))
    assert outputs_agree(profile, primary, _out(np.array([[0.3, 0.4, 0.3]], np.float32)))
    assert not outputs_agree(profile, primary, _out(np.array([[0.5, 0.4, 0.1]], np.float32)))


@pytest.mark.parametrize("profile", [DETECTOR, EMBEDDER, RAW], ids=["detector", "embedder", "raw"])
def test_other_kinds_agree_only_when_close(profile: ModelProfile) -> None:
    base = np.array([[0.5, -1.25, 3.0, 100.0]], np.float32)
    assert outputs_agree(profile, _out(base), _out(base.copy()))
    assert outputs_agree(profile, _out(base), _out(base + 1e-5))
    assert not outputs_agree(profile, _out(base), _out(base + 0.05))
    # the same argmax is not enough outside classification
    assert not outputs_agree(profile, _out(base), _out(base * 0.5))


@pytest.mark.parametrize("profile", [CLASSIFIER, RAW], ids=["classifier", "raw"])
def test_shape_or_count_mismatch_disagrees(profile: ModelProfile) -> None:
    a = np.zeros((1, 4), np.float32)
    a[0, 1] = 1
    assert not outputs_agree(profile, _out(a), _out(np.zeros((1, 5), np.float32)))
    assert not outputs_agree(profile, _out(a), _out(a.reshape(1, 2, 2)))
    assert not outputs_agree(profile, _out(a), _out(a, a))
    assert not outputs_agree(profile, _out(a, a), _out(a))
    assert not outputs_agree(profile, _out(a), ())


def test_every_output_must_agree() -> None:
    a = np.array([[1.0, 2.0]], np.float32)
    b = np.array([[3.0, 4.0]], np.float32)
    assert outputs_agree(RAW, _out(a, b), _out(a, b))
    assert not outputs_agree(RAW, _out(a, b), _out(a, b + 1))
    assert not outputs_agree(DETECTOR, _out(a, b), _out(a, b + 1))


# ------------------------------------------------------------------------------------------------
# CircuitBreaker
# ------------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _breaker(threshold: int = 3, reset_after_s: float = 5.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(threshold, reset_after_s, clock=clock), clock


def _refusal(breaker: CircuitBreaker, model: str = "mobilenet_v2") -> MeshError:
    with pytest.raises(MeshError) as info:
        breaker.check(model)
    assert info.value.code is ErrorCode.UNAVAILABLE
    return info.value


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.threshold):
        breaker.record_failure()
    assert breaker.state == "open"


def test_breaker_starts_closed_and_lets_calls_through() -> None:
    breaker, _ = _breaker()
    assert breaker.state == "closed"
    for _ in range(10):
        breaker.check("m")  # does not raise
    assert breaker.times_opened == 0


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    breaker, _ = _breaker(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.check("m")
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.times_opened == 1
    error = _refusal(breaker, "resnet50")
    assert "resnet50" in error.message
    assert error.retry_after_ms == 5000


def test_success_resets_the_failure_count() -> None:
    breaker, _ = _breaker(threshold=3)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()  # never three in a row
    assert breaker.state == "closed"
    assert breaker.failures == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.check("m")


def test_open_breaker_retry_hint_shrinks_with_time() -> None:
    breaker, clock = _breaker(reset_after_s=5.0)
    _open(breaker)
    first = _refusal(breaker).retry_after_ms
    clock.advance(2.0)
    second = _refusal(breaker).retry_after_ms
    clock.advance(2.9)
    third = _refusal(breaker).retry_after_ms
    assert first is not None and second is not None and third is not None
    assert first == 5000
    assert second == 3000
    assert 1 <= third <= 100
    assert first > second > third
    assert breaker.state == "open"


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker, clock = _breaker(reset_after_s=5.0)
    _open(breaker)
    clock.advance(5.0)
    assert breaker.state == "half_open"
    breaker.check("m")  # the probe
    for _ in range(5):
        error = _refusal(breaker)  # everyone else waits for the probe's outcome
        assert error.retry_after_ms is not None and error.retry_after_ms > 0
    clock.advance(1.0)
    _refusal(breaker)  # still one probe only


def test_probe_success_closes_the_breaker() -> None:
    breaker, clock = _breaker(threshold=2, reset_after_s=5.0)
    _open(breaker)
    clock.advance(6.0)
    breaker.check("m")
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.failures == 0
    for _ in range(5):
        breaker.check("m")
    # closed again means it takes a full threshold of failures to open
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.times_opened == 2


def test_probe_failure_reopens_for_a_full_period() -> None:
    breaker, clock = _breaker(threshold=3, reset_after_s=5.0)
    _open(breaker)
    clock.advance(5.0)
    breaker.check("m")
    breaker.record_failure()  # one failure is enough in half-open
    assert breaker.state == "open"
    assert breaker.times_opened == 2
    assert _refusal(breaker).retry_after_ms == 5000
    clock.advance(4.9)
    _refusal(breaker)
    clock.advance(0.1)
    assert breaker.state == "half_open"
    breaker.check("m")  # a new probe
    _refusal(breaker)
    breaker.record_success()
    assert breaker.state == "closed"


def test_failures_while_open_do_not_extend_the_open_period() -> None:
    breaker, clock = _breaker(threshold=2, reset_after_s=5.0)
    _open(breaker)
    clock.advance(3.0)
    breaker.record_failure()  # a straggler that was already in flight
    assert breaker.times_opened == 1
    clock.advance(2.0)
    assert breaker.state == "half_open"
    breaker.check("m")


def test_lost_probe_does_not_wedge_the_breaker() -> None:
    breaker, clock = _breaker(reset_after_s=5.0)
    _open(breaker)
    clock.advance(5.0)
    breaker.check("m")  # the probe goes out... and its outcome is never recorded
    clock.advance(60.0)  # many reset periods later, another probe should be allowed
    breaker.check("m")


def test_probe_now_ends_the_wait_of_an_open_breaker() -> None:
    breaker, clock = _breaker(threshold=2, reset_after_s=30.0)
    _open(breaker)
    clock.advance(1.0)
    _refusal(breaker)
    breaker.probe_now()  # Triton says the model is ready again
    assert breaker.state == "half_open"
    breaker.check("m")  # the probe goes through at once
    _refusal(breaker)  # only one probe at a time
    breaker.probe_now()  # a probe is out already: nothing changes
    breaker.record_success()
    assert breaker.state == "closed"


def test_probe_now_leaves_a_closed_breaker_closed() -> None:
    breaker, _ = _breaker()
    breaker.probe_now()
    assert breaker.state == "closed" and breaker.times_opened == 0
