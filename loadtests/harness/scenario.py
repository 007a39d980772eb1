"""Scenario files (``loadtests/scenarios/*.toml``, read with tomllib) as typed, validated dataclasses.

Three kinds:

``open_loop``
    Fixed arrival rates in ``[[phases]]`` (``rate`` in req/s, or ``rate_factor`` times the mesh capacity measured
    earlier in the same run), optional ``warmup_s`` at the first phase's rate (not measured), optional
    ``hit_ratio`` (share of requests that repeat an image already in the result cache; the others are fresh
    images), optional ``ingest_max_concurrency`` (ingest is restarted with that admission limit) and optional
    ``triton_cpus`` (tritonserver and its model stubs are kept on these CPUs while the scenario runs, so the mesh's
    latency is measured without Triton's CPU inference taking the other cores).
``mesh_vs_triton``
    Closed loop at each of ``concurrencies``: the mesh and, in interleaved slices, direct Triton over
    ``tritonclient.grpc.aio`` with the same tensors; then Triton's ``perf_analyzer`` when ``perf_analyzer`` is true.
``noop_vs_raw_nats``
    Closed loop with the ``noop`` model through the mesh and, interleaved, the raw nats-py 4-relay chain of
    ``loadtests/runtime_choice``, at each of ``payload_bytes`` and ``concurrencies``.
``mesh_vs_ensemble``
    Closed loop at each of ``concurrencies``: the mesh with ``payload.image`` (JPEG → top-k) and, in interleaved
    slices, the same job as one Triton ensemble (``loadtests/ensemble``); then the in-process floor with each of
    ``floor_threads`` worker threads for ``floor_s`` seconds.
``video``
    Cameras through the mesh (``loadtests/video``): a ``[video]`` table (:class:`VideoSpec`) gives the camera
    counts of the ramp, the fps, the modes, the phase lengths, the static scene of the change gate and the
    in-process baseline; no ``[payload]``.

Every scenario names its ``model``, ``deadline_ms`` (sent as ``Natriton-Timeout-Ms``) and a ``[payload]``: an
``image`` (a name from ``natriton_dev.images.sample_photos()``) or a ``tensor`` (``name``, ``datatype``,
``shape``); ``use_cache`` (default false) and ``top_k``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("open_loop", "mesh_vs_triton", "noop_vs_raw_nats", "mesh_vs_ensemble", "video")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the field."""


@dataclass(frozen=True)
class TensorPayload:
    """A ready-made input tensor (random bytes of this shape and datatype, batch dimension first)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Payload:
    """What each request carries."""

    image: str | None = None
    tensor: TensorPayload | None = None
    use_cache: bool = False
    top_k: int = 5

    def describe(self) -> str:
        """Short human form: ``image coffee.jpg`` or ``tensor IMAGE UINT8 [1, 224, 224, 3]``."""
        if self.image:
            return f"image {self.image}"
        if self.tensor:
            return f"tensor {self.tensor.name} {self.tensor.datatype} {list(self.tensor.shape)}"
        return "per-cell payload"


@dataclass(frozen=True)
class PhaseSpec:
    """One open-loop phase as written in the file: an absolute ``rate`` or a ``rate_factor`` of capacity."""

    duration_s: float
    rate: float | None = None
    rate_factor: float | None = None
    label: str = ""

    def resolve(self, capacity: float | None) -> float:
        """Requests per second of this phase given the measured capacity."""
        if self.rate is not None:
            return self.rate
        if capacity is None or capacity <= 0:
            raise ScenarioError(f"phase {self.label or '?'} needs the measured capacity (rate_factor)")
        assert self.rate_factor is not None
        return self.rate_factor * capacity


@dataclass(frozen=True)
class VideoSpec:
    """The ``[video]`` table of a ``video`` scenario (see ``loadtests/video``); every ``*_s`` scales with
    ``--time-scale``."""

    fps: float = 10.0
    """Frames per second of every camera of the ramp (``StreamSource.fps``; each reads ``Megamind.avi``, looping)."""
    cameras: tuple[int, ...] = (1, 2, 4, 8)
    """Camera counts of the ramp, in order; a mode's ramp stops after the first count whose p95 passes
    ``max_p95_ms``."""
    modes: tuple[str, ...] = ("reliable", "realtime")
    step_s: float = 10.0
    """Measured seconds per camera count (after ``settle_s``)."""
    settle_s: float = 2.0
    """Seconds after a step's last camera published its first result, before the window opens."""
    max_p95_ms: float = 500.0
    overload_factor: float = 2.0
    """Real-time overload phase: cameras x fps = this x the fastest ramp step's frames/s (0: no such phase)."""
    overload_s: float = 18.0
    static_frames: int = 100
    """Change-gate phase: frames of the static scene (a folder of images, one pass, reliable mode)."""
    static_face_frame: int = 70
    """The frame at which a real face crop is pasted into the static scene (and stays)."""
    static_fps: float = 10.0
    baseline_s: float = 2.0
    """In-process baseline: seconds per batch size (at least 2 batches)."""
    baseline_max_sizes: int = 3
    """Batch sizes measured besides 1: the router's most used ones at saturation."""
    lease_ttl_s: float = 1.5
    """Ingest is restarted with this camera lease TTL for the scenario: it takes a new camera every third of it."""

    def scaled(self, factor: float) -> VideoSpec:
        """Every duration multiplied by ``factor``."""
        return dataclasses.replace(
            self,
            step_s=self.step_s * factor,
            settle_s=self.settle_s * factor,
            overload_s=self.overload_s * factor,
            baseline_s=self.baseline_s * factor,
        )

    def planned_seconds(self) -> float:
        """Rough seconds of the scenario, assuming the reliable ramp stops at the middle count and the real-time
        one a count before the last (p95 passes the limit there)."""
        per_step = self.step_s + self.settle_s + 1.5
        steps = 0
        for mode in self.modes:
            steps += max(1, len(self.cameras) - 1) if mode == "realtime" else max(1, (len(self.cameras) + 1) // 2)
        total = steps * per_step + 8.0  # two ingest restarts
        if self.overload_factor > 0 and "realtime" in self.modes:
            total += self.overload_s + self.settle_s + 2.0
        total += self.static_frames / self.static_fps + 3.0
        total += self.baseline_s * (2 + self.baseline_max_sizes) + 3.0
        return total


@dataclass(frozen=True)
class Scenario:
    """One scenario file."""

    name: str
    kind: str
    model: str
    payload: Payload
    description: str = ""
    order: int = 100
    deadline_ms: int = 10_000
    warmup_s: float = 0.0
    phases: tuple[PhaseSpec, ...] = ()
    hit_ratio: float | None = None
    ingest_max_concurrency: int | str | None = None
    """Ingest's admission limit for this scenario: an integer, or ``"auto"`` (capacity x deadline x 0.5)."""
    triton_cpus: tuple[int, ...] = ()
    """CPUs Triton is pinned to during the scenario (none: not pinned)."""
    concurrencies: tuple[int, ...] = ()
    duration_s: float = 0.0
    slices: int = 1
    payload_bytes: tuple[int, ...] = ()
    image: str | None = None
    perf_analyzer: bool = False
    perf_analyzer_interval_ms: int = 3000
    video: VideoSpec | None = None
    floor_threads: tuple[int, ...] = ()
    """``mesh_vs_ensemble``: worker threads of each in-process floor measurement."""
    floor_s: float = 0.0
    """``mesh_vs_ensemble``: seconds per floor measurement."""
    source: str = ""

    @property
    def uses_capacity(self) -> bool:
        """Whether a phase is given relative to the measured capacity."""
        return any(p.rate_factor is not None for p in self.phases)

    def planned_seconds(self) -> float:
        """Rough seconds of load this scenario generates (for the time budget)."""
        if self.kind == "open_loop":
            return self.warmup_s + sum(p.duration_s for p in self.phases)
        if self.kind == "video":
            return self.video.planned_seconds() if self.video else 0.0
        cells = len(self.concurrencies) * max(1, len(self.payload_bytes))
        per_cell = 2 * (self.duration_s + self.warmup_s)  # the mesh and its baseline
        if self.kind == "mesh_vs_ensemble":  # + loading the ensemble (~3 s) and the floor (warm-up ~1 s each)
            return cells * per_cell + 3.0 + len(self.floor_threads) * (self.floor_s + 1.0)
        return cells * per_cell + (12.0 if self.perf_analyzer else 0.0)

    def scaled(self, factor: float) -> Scenario:
        """A copy with every duration multiplied by ``factor`` (rates unchanged)."""
        if factor == 1.0:
            return self
        if not (factor > 0 and math.isfinite(factor)):
            raise ScenarioError(f"time scale must be positive, got {factor!r}")
        phases = tuple(dataclasses.replace(p, duration_s=p.duration_s * factor) for p in self.phases)
        video = self.video.scaled(factor) if self.video else None
        return dataclasses.replace(
            self,
            phases=phases,
            warmup_s=self.warmup_s * factor,
            duration_s=self.duration_s * factor,
            video=video,
            floor_s=self.floor_s * factor,
        )


def _fail(source: str, message: str) -> ScenarioError:
    return ScenarioError(f"{source}: {message}")


def _number(
    raw: Mapping[str, Any],
    key: str,
    source: str,
    *,
    default: float | None = None,
    positive: bool = True,
    required: bool = False,
) -> Any:
    value = raw.get(key, default)
    if value is None:
        if required:
            raise _fail(source, f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(source, f"{key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise _fail(source, f"{key} must be > 0, got {value!r}")
    if not positive and value < 0:
        raise _fail(source, f"{key} must be >= 0, got {value!r}")
    return value


def _int_list(raw: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _fail(source, f"{key} must be a list of integers, got {value!r}")
    if any(v < 1 for v in value):
        raise _fail(source, f"{key} must hold integers >= 1, got {value!r}")
    return tuple(value)


def parse_payload(raw: Any, source: str) -> Payload:
    """The ``[payload]`` table."""
    if raw is None:
        return Payload()
    if not isinstance(raw, dict):
        raise _fail(source, "payload must be a table")
    unknown = set(raw) - {"image", "tensor", "use_cache", "top_k"}
    if unknown:
        raise _fail(source, f"unknown payload keys {sorted(unknown)}")
    image, tensor_raw = raw.get("image"), raw.get("tensor")
    if image is not None and tensor_raw is not None:
        raise _fail(source, "payload takes image or tensor, not both")
    if image is not None and not (isinstance(image, str) and image):
        raise _fail(source, f"payload.image must be a file name, got {image!r}")
    tensor = None
    if tensor_raw is not None:
        if not isinstance(tensor_raw, dict) or set(tensor_raw) != {"name", "datatype", "shape"}:
            raise _fail(source, "payload.tensor must be {name, datatype, shape}")
        shape = tensor_raw["shape"]
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise _fail(source, f"payload.tensor.shape must be a list of positive integers, got {shape!r}")
        tensor = TensorPayload(str(tensor_raw["name"]), str(tensor_raw["datatype"]).upper(), tuple(shape))
    use_cache = raw.get("use_cache", False)
    if not isinstance(use_cache, bool):
        raise _fail(source, f"payload.use_cache must be true or false, got {use_cache!r}")
    top_k = raw.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
        raise _fail(source, f"payload.top_k must be an integer within 1-100, got {top_k!r}")
    return Payload(image=image, tensor=tensor, use_cache=use_cache, top_k=top_k)


def parse_phases(raw: Any, source: str) -> tuple[PhaseSpec, ...]:
    """The ``[[phases]]`` array."""
    if not isinstance(raw, list) or not raw:
        raise _fail(source, "an open_loop scenario needs at least one [[phases]] entry")
    phases = []
    for i, entry in enumerate(raw, 1):
        where = f"{source} phase {i}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: must be a table")
        unknown = set(entry) - {"rate", "rate_factor", "duration_s", "label"}
        if unknown:
            raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
        if ("rate" in entry) == ("rate_factor" in entry):
            raise ScenarioError(f"{where}: give exactly one of rate (req/s) or rate_factor (x capacity)")
        phases.append(
            PhaseSpec(
                duration_s=float(_number(entry, "duration_s", where, required=True)),
                rate=_number(entry, "rate", where),
                rate_factor=_number(entry, "rate_factor", where),
                label=str(entry.get("label", f"phase {i}")),
            )
        )
    return tuple(phases)


COMMON_KEYS = {"name", "kind", "description", "order", "model", "deadline_ms", "payload", "warmup_s"}
KIND_KEYS = {
    "open_loop": {"phases", "hit_ratio", "ingest_max_concurrency", "triton_cpus"},
    "mesh_vs_triton": {"concurrencies", "duration_s", "slices", "image", "perf_analyzer", "perf_analyzer_interval_ms"},
    "noop_vs_raw_nats": {"concurrencies", "duration_s", "slices", "payload_bytes"},
    "mesh_vs_ensemble": {"concurrencies", "duration_s", "slices", "floor_threads", "floor_s"},
    "video": {"video"},
}


def parse_scenario(raw: Mapping[str, Any], source: str = "<scenario>", default_name: str = "") -> Scenario:
    """Validate one parsed TOML document."""
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _fail(source, f"kind must be one of {list(KINDS)}, got {kind!r}")
    unknown = set(raw) - COMMON_KEYS - KIND_KEYS[kind]
    if unknown:
        raise _fail(source, f"unknown keys for kind {kind}: {sorted(unknown)}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise _fail(source, f"name must be a non-empty identifier (letters, digits, _ and -), got {name!r}")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise _fail(source, "model is required")
    payload = parse_payload(raw.get("payload"), source)
    deadline = raw.get("deadline_ms", 10_000)
    if not isinstance(deadline, int) or isinstance(deadline, bool) or not 1 <= deadline <= 120_000:
        raise _fail(source, f"deadline_ms must be an integer within 1-120000, got {deadline!r}")
    order = raw.get("order", 100)
    if not isinstance(order, int) or isinstance(order, bool):
        raise _fail(source, f"order must be an integer, got {order!r}")
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "model": model,
        "payload": payload,
        "description": str(raw.get("description", "")).strip(),
        "order": order,
        "deadline_ms": deadline,
        "warmup_s": float(_number(raw, "warmup_s", source, default=0.0, positive=False)),
        "source": source,
    }
    if kind == "video":
        return Scenario(**common, video=parse_video(raw.get("video"), source))
    if kind == "open_loop":
        if payload.image is None and payload.tensor is None:
            raise _fail(source, "an open_loop scenario needs payload.image or payload.tensor")
        hit_ratio = _number(raw, "hit_ratio", source, positive=False)
        if hit_ratio is not None:
            if hit_ratio > 1:
                raise _fail(source, f"hit_ratio must be within [0, 1], got {hit_ratio!r}")
            if payload.image is None or not payload.use_cache:
                raise _fail(source, "hit_ratio needs an image payload with use_cache = true")
        limit = raw.get("ingest_max_concurrency")
        if (
            limit is not None
            and limit != "auto"
            and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1)
        ):
            raise _fail(source, f'ingest_max_concurrency must be an integer >= 1 or "auto", got {limit!r}')
        cpus = raw.get("triton_cpus", [])
        numbers = isinstance(cpus, list) and all(type(c) is int and c >= 0 for c in cpus)
        if not numbers:
            raise _fail(source, f"triton_cpus must be a list of CPU numbers, got {cpus!r}")
        return Scenario(
            **common,
            phases=parse_phases(raw.get("phases"), source),
            hit_ratio=hit_ratio,
            ingest_max_concurrency=limit,
            triton_cpus=tuple(cpus),
        )
    concurrencies = _int_list(raw, "concurrencies", source)
    if not concurrencies:
        raise _fail(source, "concurrencies must list at least one level")
    slices = raw.get("slices", 1)
    if not isinstance(slices, int) or isinstance(slices, bool) or slices < 1:
        raise _fail(source, f"slices must be an integer >= 1, got {slices!r}")
    loop: dict[str, Any] = {
        "concurrencies": concurrencies,
        "duration_s": float(_number(raw, "duration_s", source, required=True)),
        "slices": slices,
    }
    if kind == "mesh_vs_triton":
        if payload.tensor is None:
            raise _fail(source, "mesh_vs_triton needs payload.tensor (direct Triton gets the same tensor)")
        image = raw.get("image")
        if image is not None and not (isinstance(image, str) and image):
            raise _fail(source, f"image must be a file name, got {image!r}")
        perf = raw.get("perf_analyzer", False)
        if not isinstance(perf, bool):
            raise _fail(source, f"perf_analyzer must be true or false, got {perf!r}")
        interval = raw.get("perf_analyzer_interval_ms", 3000)
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 500:
            raise _fail(source, f"perf_analyzer_interval_ms must be an integer >= 500, got {interval!r}")
        return Scenario(**common, **loop, image=image, perf_analyzer=perf, perf_analyzer_interval_ms=interval)
    if kind == "mesh_vs_ensemble":
        if payload.image is None:
            raise _fail(source, "mesh_vs_ensemble needs payload.image (the JPEG both systems classify)")
        floor_s = float(_number(raw, "floor_s", source, default=0.0, positive=False))
        return Scenario(**common, **loop, floor_threads=_int_list(raw, "floor_threads", source), floor_s=floor_s)
    sizes = _int_list(raw, "payload_bytes", source)
    if not sizes:
        raise _fail(source, "payload_bytes must list at least one size")
    return Scenario(**common, **loop, payload_bytes=sizes)


VIDEO_MODES = ("reliable", "realtime")


def parse_video(raw: Any, source: str) -> VideoSpec:
    """The ``[video]`` table (every key optional; defaults from :class:`VideoSpec`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(source, "video must be a table")
    fields = {f.name: f for f in dataclasses.fields(VideoSpec)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise _fail(source, f"unknown video keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"video.{key}"
        if key == "cameras":
            cameras = _int_list(raw, key, source)
            if not cameras or list(cameras) != sorted(set(cameras)):
                raise _fail(source, f"{where} must be increasing camera counts, got {value!r}")
            values[key] = cameras
        elif key == "modes":
            if not isinstance(value, list) or not value or any(m not in VIDEO_MODES for m in value):
                raise _fail(source, f"{where} must list some of {list(VIDEO_MODES)}, got {value!r}")
            values[key] = tuple(dict.fromkeys(value))
        elif key in ("static_frames", "static_face_frame", "baseline_max_sizes"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _fail(source, f"{where} must be an integer >= 0, got {value!r}")
            values[key] = value
        else:
            positive = key in ("fps", "step_s", "max_p95_ms", "static_fps", "baseline_s", "lease_ttl_s")
            values[key] = float(_number(raw, key, source, positive=positive))
    spec = VideoSpec(**values)
    if not 0 < spec.static_face_frame < spec.static_frames:
        raise _fail(source, "video.static_face_frame must lie within the static scene's frames (after frame 0)")
    return spec


def load_scenario(path: Path) -> Scenario:
    """Read and validate one ``.toml`` file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path.name}: not valid TOML: {exc}") from exc
    return parse_scenario(raw, source=path.name, default_name=path.stem)


def load_scenarios(directory: Path, only: Iterable[str] = ()) -> list[Scenario]:
    """Every scenario in ``directory`` in run order (``order``, then name); ``only`` keeps the named ones."""
    scenarios = [load_scenario(p) for p in sorted(directory.glob("*.toml"))]
    names = [s.name for s in scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"scenario names used twice: {duplicates}")
    wanted = [o for o in only if o]
    if wanted:
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise ScenarioError(f"no scenario named {missing} (have {sorted(names)})")
        scenarios = [s for s in scenarios if s.name in wanted]
    return sorted(scenarios, key=lambda s: (s.order, s.name))
