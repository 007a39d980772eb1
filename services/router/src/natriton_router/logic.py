"""Pure router logic: model descriptions from Triton, error mapping, version choice, circuit breaking."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, RoutePolicy, Tensor, TensorSpec
from natriton.profiles import (
    BuiltProfile,
    ClassifierProfile,
    ModelFile,
    ModelProfile,
    ProfileError,
    RawProfile,
    ReadFile,
    build_profile,
)
from natriton.tensors import to_array

_GRPC_TO_ERROR = {
    "StatusCode.INVALID_ARGUMENT": ErrorCode.INVALID_ARGUMENT,
    "StatusCode.NOT_FOUND": ErrorCode.NOT_FOUND,
    "StatusCode.DEADLINE_EXCEEDED": ErrorCode.DEADLINE_EXCEEDED,
    "StatusCode.UNAVAILABLE": ErrorCode.UNAVAILABLE,
    "StatusCode.RESOURCE_EXHAUSTED": ErrorCode.OVERLOADED,
    "StatusCode.CANCELLED": ErrorCode.UNAVAILABLE,
}


def error_from_triton(status: str | None, message: str) -> MeshError:
    """Map a Triton/gRPC status (``StatusCode.X``) to a typed mesh error."""
    code = _GRPC_TO_ERROR.get(status or "", ErrorCode.INTERNAL)
    retry = 1000 if code in (ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED) else None
    return MeshError(code, f"triton: {message}", retry_after_ms=retry)


def _specs(entries: Sequence[dict[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            name=str(e["name"]),
            datatype=str(e["data_type"]).removeprefix("TYPE_"),
            shape=tuple(int(d) for d in e.get("dims", [])),
        )
        for e in entries
    )


def model_info_from_triton(
    config: dict[str, Any], versions: Sequence[str], read_file: ReadFile | None = None
) -> tuple[ModelInfo, tuple[ModelFile, ...]]:
    """Build a catalog entry (with its typed profile) from Triton's model config (JSON form) and ready versions.

    ``read_file`` reads files beside the model (labels, tokenizer). A configuration the mesh cannot serve gives
    an entry whose ``problem`` says why (requests for it are refused with that reason), never an exception.
    Returns the entry and the files to publish with it.
    """
    name = str(config["name"])
    parameters = {str(k): str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}
    inputs = _specs(config.get("input", []))
    outputs = _specs(config.get("output", []))
    label_files = {
        str(o["name"]): str(o["label_filename"]) for o in config.get("output", []) if o.get("label_filename")
    }
    problem = ""
    try:
        built = build_profile(name, parameters, inputs, outputs, label_files=label_files, read_file=read_file)
    except ProfileError as exc:
        problem = str(exc)
        built = BuiltProfile(profile=RawProfile())
    info = ModelInfo(
        name=name,
        versions=tuple(sorted(versions, key=lambda v: (len(v), v))),
        task="invalid" if problem else built.profile.__struct_config__.tag,  # type: ignore[arg-type]
        max_batch_size=int(config.get("max_batch_size", 0)),
        inputs=inputs,
        outputs=outputs,
        parameters=parameters,
        preferred_batch_sizes=tuple(
            sorted(int(n) for n in config.get("dynamic_batching", {}).get("preferred_batch_size", []))
        ),
        profile=built.profile,
        cache_ttl_s=built.cache_ttl_s,
        problem=problem,
    )
    return info, built.files


def choose_version(info: ModelInfo, policy: RoutePolicy | None, rng: random.Random) -> str:
    """The version for a request that named none: weighted split over ready versions, else the latest."""
    if policy is not None:
        ready = [(v, w) for v, w in policy.weights.items() if v in info.versions and 0 < w < math.inf]
        if ready:
            versions, weights = zip(*ready, strict=True)
            return str(rng.choices(versions, weights=weights)[0])
    return info.latest_version


def shadow_version_for(info: ModelInfo, policy: RoutePolicy | None, primary: str, rng: random.Random) -> str:
    """The version to mirror this request to ('' for none): never the primary, only a ready one."""
    if policy is None or not policy.shadow_version or policy.shadow_version == primary:
        return ""
    if policy.shadow_version not in info.versions or rng.random() >= policy.shadow_fraction:
        return ""
    return policy.shadow_version


def outputs_agree(profile: ModelProfile, primary: Sequence[Tensor], shadow: Sequence[Tensor]) -> bool:
    """Whether a shadow answer matches the primary: same top class for classifiers, else close values."""
    if len(primary) != len(shadow):
        return False
    for a, b in zip(primary, shadow, strict=True):
        x, y = to_array(a), to_array(b)
        if x.shape != y.shape:
            return False
        if isinstance(profile, ClassifierProfile):
            if not np.array_equal(x.reshape(x.shape[0], -1).argmax(axis=1), y.reshape(y.shape[0], -1).argmax(axis=1)):
                return False
        elif not np.allclose(x, y, rtol=1e-3, atol=1e-4):
            return False
    return True


class CircuitBreaker:
    """Per model: after ``threshold`` consecutive failures, refuse at once for ``reset_after_s``, then let one
    probe through (half-open); a success closes the circuit again. Time is injected for tests."""

    def __init__(self, threshold: int, reset_after_s: float, clock: Any = time.monotonic) -> None:
        self.threshold = threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._probe_started: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        if self.opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self.opened_at >= self.reset_after_s else "open"

    def check(self, model: str) -> None:
        """Raise ``unavailable`` (with a retry hint) while open; in half-open let exactly one probe through."""
        state = self.state
        if state == "closed":
            return
        now = self._clock()
        probe_lost = self._probe_started is not None and now - self._probe_started >= self.reset_after_s
        if state == "half_open" and (self._probe_started is None or probe_lost):
            # one probe at a time; a probe that never reported back (expired, refused, cancelled) is replaced
            self._probe_started = now
            return
        assert self.opened_at is not None
        wait_ms = max(1, int((self.opened_at + self.reset_after_s - self._clock()) * 1000))
        raise MeshError(
            ErrorCode.UNAVAILABLE,
            f"{model}: Triton failed {self.failures} times in a row; circuit open",
            retry_after_ms=wait_ms if state == "open" else 100,
        )

    def probe_now(self) -> None:
        """The model answers readiness again (Triton is back): end the wait, so the next call is the probe that
        closes the circuit, instead of waiting out ``reset_after_s``."""
        if self.opened_at is not None and self._probe_started is None:
            self.opened_at = min(self.opened_at, self._clock() - self.reset_after_s)

    def record_success(self) -> None:
        """A call went through: close."""
        self.failures = 0
        self.opened_at = None
        self._probe_started = None

    def record_failure(self) -> None:
        """A call failed in a way that says Triton (not the request) is the problem."""
        self.failures += 1
        if self._probe_started is not None or (self.opened_at is None and self.failures >= self.threshold):
            self.opened_at = self._clock()
            self.times_opened += 1
        self._probe_started = None
