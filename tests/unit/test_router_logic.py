"""Router logic: Triton model configs → catalog entries, Triton errors → typed errors, and the batcher."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, Tracer

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ModelInfo, Tensor, TensorSpec
from natriton.profiles import ClassifierProfile, ColorOrder, EmbedderProfile, ImageSpec, RawProfile, ResizeMode
from natriton.tensors import to_array, to_tensor
from natriton_router.batching import BatchResult, Limits, ModelBatcher, concat_inputs, split_outputs
from natriton_router.logic import error_from_triton, model_info_from_triton

# ------------------------------------------------------------------------------------------------
# model_info_from_triton
# ------------------------------------------------------------------------------------------------
LABELS = tuple(f"class {i}" for i in range(1000))
FILES = {"labels.txt": "\n".join(LABELS).encode() + b"\n", "tokenizer.json": b'{"version": "1.0"}'}


def _read(files: dict[str, bytes] = FILES) -> Callable[[str], bytes]:
    """A ``read_file`` over an in-memory model directory."""

    def read(name: str) -> bytes:
        if name not in files:
            raise FileNotFoundError(2, "No such file or directory", name)
        return files[name]

    return read


TRITON_CONFIG: dict[str, Any] = {
    # shaped like tritonclient's get_model_config(as_json=True)["config"] (int64 dims are strings in JSON)
    "name": "mobilenet_v2",
    "platform": "",
    "backend": "python",
    "version_policy": {"latest": {"num_versions": 1}},
    "max_batch_size": 32,
    "input": [
        {
            "name": "IMAGE",
            "data_type": "TYPE_UINT8",
            "format": "FORMAT_NONE",
            "dims": ["224", "224", "3"],
            "is_shape_tensor": False,
        }
    ],
    "output": [{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": ["1000"], "label_filename": "labels.txt"}],
    "dynamic_batching": {"max_queue_delay_microseconds": "0", "preferred_batch_size": ["8", "4"]},
    "instance_group": [{"name": "mobilenet_v2_0", "kind": "KIND_CPU", "count": 1}],
    "parameters": {
        "natriton.kind": {"string_value": "classifier"},
        "natriton.resize_shorter": {"string_value": "256"},
        "natriton.cache_ttl_s": {"string_value": "120"},
        "onnx.intra_op_threads": {"string_value": "1"},
    },
}


def _with(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**config, **changes}


def _with_parameters(config: dict[str, Any], **parameters: str) -> dict[str, Any]:
    extra = {k.replace("__", "."): {"string_value": v} for k, v in parameters.items()}
    return {**config, "parameters": {**config["parameters"], **extra}}


def test_model_info_from_triton_json_config() -> None:
    info, files = model_info_from_triton(TRITON_CONFIG, ["2", "10", "1"], _read())
    assert files == ()
    assert info == ModelInfo(
        name="mobilenet_v2",
        versions=("1", "2", "10"),  # numeric order, not string order
        task="classifier",
        max_batch_size=32,
        inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
        outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
        parameters={
            "natriton.kind": "classifier",
            "natriton.resize_shorter": "256",
            "natriton.cache_ttl_s": "120",
            "onnx.intra_op_threads": "1",
        },
        preferred_batch_sizes=(4, 8),
        profile=ClassifierProfile(
            output="LOGITS",
            labels=LABELS,
            image=ImageSpec(
                input="IMAGE",
                datatype="UINT8",
                height=224,
                width=224,
                channels_last=True,
                color=ColorOrder.RGB,
                resize=ResizeMode.SHORTER_SIDE_CROP,
                resize_shorter=256,
            ),
        ),
        cache_ttl_s=120,
        problem="",
    )
    assert info.latest_version == "10"
    assert all(type(d) is int for d in info.inputs[0].shape)


def test_model_info_minimal_config() -> None:
    config = {
        "name": "adder",
        "input": [{"name": "X", "data_type": "TYPE_INT64", "dims": ["-1"]}],
        "output": [{"name": "Y", "data_type": "TYPE_INT64", "dims": ["-1"]}],
    }
    info, files = model_info_from_triton(config, ["1"])
    assert info.task == "raw"
    assert info.profile == RawProfile()
    assert (info.problem, info.cache_ttl_s, files) == ("", None, ())
    assert info.max_batch_size == 0
    assert info.parameters == {}
    assert info.preferred_batch_sizes == ()
    assert info.inputs == (TensorSpec(name="X", datatype="INT64", shape=(-1,)),)


def test_model_info_parameter_without_string_value_is_empty() -> None:
    info, _ = model_info_from_triton({"name": "m", "parameters": {"k": {}}}, [])
    assert info.parameters == {"k": ""}
    assert info.versions == ()
    assert info.latest_version == ""
    assert info.task == "raw" and not info.problem


def test_empty_label_filename_means_no_labels() -> None:
    config = _with(
        TRITON_CONFIG, output=[{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": ["1000"], "label_filename": ""}]
    )
    info, _ = model_info_from_triton(config, ["1"])  # no repository needed: no file is named
    assert isinstance(info.profile, ClassifierProfile)
    assert info.profile.labels == ()
    assert not info.problem


def test_embedder_config_returns_its_tokenizer_file() -> None:
    config = {
        "name": "minilm_l6_v2",
        "max_batch_size": 32,
        "input": [
            {"name": "INPUT_IDS", "data_type": "TYPE_INT64", "dims": ["-1"]},
            {"name": "ATTENTION_MASK", "data_type": "TYPE_INT64", "dims": ["-1"]},
        ],
        "output": [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": ["384"]}],
        "parameters": {
            "natriton.kind": {"string_value": "embedder"},
            "natriton.tokenizer": {"string_value": "tokenizer.json"},
        },
    }
    info, files = model_info_from_triton(config, ["1"], _read())
    assert info.task == "embedder" and not info.problem
    assert [(f.name, f.data) for f in files] == [("minilm_l6_v2/tokenizer.json", FILES["tokenizer.json"])]
    assert isinstance(info.profile, EmbedderProfile) and info.profile.text is not None
    assert info.profile.text.tokenizer_file == "minilm_l6_v2/tokenizer.json"
    assert info.profile.text.tokenizer_sha256 == files[0].sha256


@pytest.mark.parametrize(
    ("config", "read_file", "match"),
    [
        (_with_parameters(TRITON_CONFIG, natriton__colour="RGB"), _read(), "colour"),
        (_with_parameters(TRITON_CONFIG, natriton__kind="segmenter"), _read(), "segmenter"),
        (_with_parameters(TRITON_CONFIG, natriton__resize="squash"), _read(), "natriton.resize"),
        (TRITON_CONFIG, None, "no model repository"),
        (TRITON_CONFIG, _read({}), "cannot read 'labels.txt'"),
        (TRITON_CONFIG, _read({"labels.txt": b"a\nb\n"}), "2 labels"),
    ],
    ids=["misspelt", "unknown-kind", "bad-value", "no-repository", "missing-labels", "label-count"],
)
def test_unservable_config_gives_an_entry_with_its_problem(
    config: dict[str, Any], read_file: Callable[[str], bytes] | None, match: str
) -> None:
    info, files = model_info_from_triton(config, ["1"], read_file)  # never raises
    assert "'mobilenet_v2'" in info.problem
    assert match in info.problem
    assert info.task == "invalid"
    assert info.profile == RawProfile()
    assert files == ()
    assert info.cache_ttl_s is None
    # the rest of the entry still describes the model
    assert (info.name, info.versions, info.max_batch_size) == ("mobilenet_v2", ("1",), 32)
    assert info.inputs == (TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),)


def test_catalog_entry_with_profile_survives_json() -> None:
    info, _ = model_info_from_triton(TRITON_CONFIG, ["1"], _read())
    codec: Codec[ModelInfo] = Codec(ModelInfo)
    assert codec.decode(codec.encode(info, json=True), json=True) == info
    assert json.loads(codec.encode(info, json=True))["profile"]["type"] == "classifier"


# ------------------------------------------------------------------------------------------------
# error_from_triton
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "retry_after_ms"),
    [
        ("StatusCode.INVALID_ARGUMENT", ErrorCode.INVALID_ARGUMENT, None),
        ("StatusCode.NOT_FOUND", ErrorCode.NOT_FOUND, None),
        ("StatusCode.DEADLINE_EXCEEDED", ErrorCode.DEADLINE_EXCEEDED, None),
        ("StatusCode.UNAVAILABLE", ErrorCode.UNAVAILABLE, 1000),
        ("StatusCode.RESOURCE_EXHAUSTED", ErrorCode.OVERLOADED, 1000),
        ("StatusCode.CANCELLED", ErrorCode.UNAVAILABLE, 1000),
        ("StatusCode.INTERNAL", ErrorCode.INTERNAL, None),
        ("StatusCode.UNKNOWN", ErrorCode.INTERNAL, None),
        ("something else", ErrorCode.INTERNAL, None),
        (None, ErrorCode.INTERNAL, None),
    ],
)
def test_error_from_triton(status: str | None, code: ErrorCode, retry_after_ms: int | None) -> None:
    error = error_from_triton(status, "model failed")
    assert isinstance(error, MeshError)
    assert error.code is code
    assert error.retry_after_ms == retry_after_ms
    assert error.message == "triton: model failed"


# ------------------------------------------------------------------------------------------------
# concat / split
# ------------------------------------------------------------------------------------------------
def _t(name: str, array: np.ndarray) -> Tensor:
    return to_tensor(name, array)


def test_concat_inputs_stacks_by_name() -> None:
    a = (_t("x", np.full((1, 2), 1, np.float32)), _t("y", np.full((1, 1), 10, np.int64)))
    b = (_t("y", np.full((2, 1), 20, np.int64)), _t("x", np.full((2, 2), 2, np.float32)))  # other order
    stacked = concat_inputs([a, b])
    assert set(stacked) == {"x", "y"}
    np.testing.assert_array_equal(stacked["x"], [[1, 1], [2, 2], [2, 2]])
    np.testing.assert_array_equal(stacked["y"], [[10], [20], [20]])


def test_concat_single_request_is_the_wire_view() -> None:
    tensor = _t("x", np.arange(4, dtype=np.float32).reshape(1, 4))
    stacked = concat_inputs([(tensor,)])
    assert np.shares_memory(stacked["x"], np.frombuffer(tensor.data, dtype=np.uint8))


def test_split_outputs_cuts_by_size() -> None:
    outputs = {"o": np.arange(6, dtype=np.int32).reshape(6, 1), "p": np.arange(6, dtype=np.float32) * 10}
    parts = split_outputs(outputs, [1, 3, 2], ["o", "p"])
    assert [tuple(t.name for t in part) for part in parts] == [("o", "p")] * 3
    assert [to_array(part[0]).ravel().tolist() for part in parts] == [[0], [1, 2, 3], [4, 5]]
    assert [to_array(part[1]).tolist() for part in parts] == [[0.0], [10.0, 20.0, 30.0], [40.0, 50.0]]


# ------------------------------------------------------------------------------------------------
# ModelBatcher
# ------------------------------------------------------------------------------------------------
class FakeExecutor:
    """An async stand-in for Triton: OUT = IN * 2, AUX = IN + 1; can be held, or made to fail."""

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self.deadlines: list[float | None] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures: list[BaseException] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def __call__(self, inputs: dict[str, np.ndarray], deadline_ms: float | None = None) -> dict[str, np.ndarray]:
        self.calls.append({k: v.copy() for k, v in inputs.items()})
        self.deadlines.append(deadline_ms)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            if self.failures:
                raise self.failures.pop(0)
            x = inputs["IN"]
            return {"OUT": x * 2, "AUX": (x + 1).astype(np.int64)}
        finally:
            self.in_flight -= 1

    @property
    def batch_dims(self) -> list[int]:
        return [c["IN"].shape[0] for c in self.calls]


BatcherFactory = Callable[..., tuple[ModelBatcher, FakeExecutor]]


@pytest.fixture
async def make_batcher() -> AsyncIterator[BatcherFactory]:
    made: list[tuple[ModelBatcher, FakeExecutor]] = []

    def factory(
        max_batch_size: int = 8,
        slots: int = 1,
        max_wait_s: float = 0.0,
        limits: Limits | None = None,
        tracer: Tracer | None = None,
        name: str = "",
    ) -> tuple[ModelBatcher, FakeExecutor]:
        executor = FakeExecutor()
        batcher = ModelBatcher(
            executor,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            slots=slots,
            output_names=("OUT", "AUX"),
            limits=limits or Limits(),
            tracer=tracer,
            name=name,
        )
        made.append((batcher, executor))
        return batcher, executor

    yield factory
    for batcher, executor in made:
        executor.release()  # a failed test must not leave close() waiting on a held batch
        async with asyncio.timeout(2.0):
            await batcher.close()


def _req(value: float, size: int = 1, width: int = 3) -> tuple[Tensor, ...]:
    return (to_tensor("IN", np.full((size, width), value, dtype=np.float32)),)


def _submit(batcher: ModelBatcher, inputs: tuple[Tensor, ...], deadline_ms: float | None = None) -> asyncio.Task[Any]:
    async def outputs() -> tuple[Tensor, ...]:
        return (await batcher.submit(inputs, deadline_ms)).outputs

    return asyncio.get_running_loop().create_task(outputs())


async def _until(predicate: Callable[[], bool], max_turns: int = 10_000) -> None:
    """Let the event loop run until ``predicate`` holds (no wall-clock sleeps)."""
    for _ in range(max_turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def _gather(tasks: list[asyncio.Task[Any]]) -> list[Any]:
    async with asyncio.timeout(2.0):
        return await asyncio.gather(*tasks, return_exceptions=True)


async def _busy(batcher: ModelBatcher, executor: FakeExecutor, value: float = -1.0) -> asyncio.Task[Any]:
    """Occupy the (single) execution slot with a held one-item batch."""
    executor.hold()
    blocker = _submit(batcher, _req(value))
    await _until(lambda: len(executor.calls) == 1)
    return blocker


async def test_single_request_runs_alone_at_once(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    async with asyncio.timeout(2.0):
        out = (await batcher.submit(_req(3.0), None)).outputs
    assert executor.batch_dims == [1]
    assert [t.name for t in out] == ["OUT", "AUX"]
    np.testing.assert_array_equal(to_array(out[0]), np.full((1, 3), 6.0, np.float32))
    assert batcher.batch_sizes == Counter({1: 1})


async def test_requests_queued_while_slot_busy_form_one_batch(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(max_batch_size=8, slots=1)
    blocker = await _busy(batcher, executor)
    waiting = [_submit(batcher, _req(float(i))) for i in range(3)]
    await _until(lambda: batcher.queued == 3)
    assert len(executor.calls) == 1  # nothing else runs while the slot is busy
    executor.release()
    results = await _gather([blocker, *waiting])
    assert not [r for r in results if isinstance(r, BaseException)]
    assert batcher.batch_sizes == Counter({1: 1, 3: 1})
    assert executor.batch_dims == [1, 3]
    assert batcher.queued == 0


async def test_outputs_go_back_to_the_right_request(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(max_batch_size=16)
    blocker = await _busy(batcher, executor)
    sizes = [2, 1, 3, 1]
    waiting = [_submit(batcher, _req(10.0 * (i + 1), size=size)) for i, size in enumerate(sizes)]
    await _until(lambda: batcher.queued == len(sizes))
    executor.release()
    results = await _gather([blocker, *waiting])
    assert executor.batch_dims == [1, sum(sizes)]
    for i, (size, (out, aux)) in enumerate(zip(sizes, results[1:], strict=True)):
        value = 10.0 * (i + 1)
        assert out.shape == (size, 3) and aux.shape == (size, 3)
        np.testing.assert_array_equal(to_array(out), np.full((size, 3), 2 * value, np.float32))
        np.testing.assert_array_equal(to_array(aux), np.full((size, 3), value + 1, np.int64))
        assert aux.datatype == "INT64"


async def test_max_batch_size_is_never_exceeded(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(max_batch_size=4, slots=1)
    blocker = await _busy(batcher, executor)
    sizes = [3, 2, 1, 4, 1]
    waiting = [_submit(batcher, _req(float(i + 1), size=size)) for i, size in enumerate(sizes)]
    await _until(lambda: batcher.queued == len(sizes))
    executor.release()
    results = await _gather([blocker, *waiting])
    assert not [r for r in results if isinstance(r, BaseException)]
    assert max(executor.batch_dims) <= 4
    assert max(batcher.batch_sizes) <= 4
    # 3 | (2 held back) -> 2+1 | 4 | 1 : arrival order kept, the oversized arrival waits for the next batch
    assert executor.batch_dims == [1, 3, 3, 4, 1]
    assert sum(executor.batch_dims) == 1 + sum(sizes)
    for i, (size, (out, _)) in enumerate(zip(sizes, results[1:], strict=True)):
        np.testing.assert_array_equal(to_array(out), np.full((size, 3), 2.0 * (i + 1), np.float32))


async def test_expired_items_fail_and_never_reach_the_executor(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    blocker = await _busy(batcher, executor)
    now_ms = time.time() * 1000
    expired = _submit(batcher, _req(7.0), deadline_ms=now_ms - 1000)
    live = _submit(batcher, _req(8.0), deadline_ms=now_ms + 60_000)
    no_deadline = _submit(batcher, _req(9.0))
    await _until(lambda: batcher.queued == 3)
    executor.release()
    results = await _gather([blocker, expired, live, no_deadline])
    assert isinstance(results[1], MeshError)
    assert results[1].code is ErrorCode.DEADLINE_EXCEEDED
    np.testing.assert_array_equal(to_array(results[2][0]), np.full((1, 3), 16.0, np.float32))
    np.testing.assert_array_equal(to_array(results[3][0]), np.full((1, 3), 18.0, np.float32))
    assert batcher.expired == 1
    assert executor.batch_dims == [1, 2]
    assert 7.0 not in executor.calls[1]["IN"]
    assert batcher.batch_sizes == Counter({1: 1, 2: 1})


async def test_batch_of_only_expired_items_skips_the_executor(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    with pytest.raises(MeshError) as info:
        async with asyncio.timeout(2.0):
            await batcher.submit(_req(1.0), time.time() * 1000 - 1)
    assert info.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert executor.calls == []
    assert batcher.batch_sizes == Counter()
    # the slot was given back
    async with asyncio.timeout(2.0):
        out = (await batcher.submit(_req(1.0), None)).outputs
    assert to_array(out[0])[0, 0] == 2.0


async def test_mesh_error_fails_every_member_and_batcher_recovers(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(slots=1)
    blocker = await _busy(batcher, executor)
    boom = MeshError(ErrorCode.UNAVAILABLE, "triton: gone", retry_after_ms=1000)
    executor.failures.append(boom)  # the blocker's batch fails
    executor.failures.append(boom)  # so does the next one, with three members
    members = [_submit(batcher, _req(float(i))) for i in range(3)]
    await _until(lambda: batcher.queued == 3)
    executor.release()
    results = await _gather([blocker, *members])
    assert all(r is boom for r in results)
    assert executor.batch_dims == [1, 3]
    async with asyncio.timeout(2.0):
        out = (await batcher.submit(_req(5.0), None)).outputs
    np.testing.assert_array_equal(to_array(out[0]), np.full((1, 3), 10.0, np.float32))


async def test_generic_exception_becomes_internal(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    executor.failures.append(RuntimeError("segfault in the client"))
    tasks = [_submit(batcher, _req(float(i))) for i in range(2)]
    results = await _gather(tasks)
    for result in results:
        assert isinstance(result, MeshError)
        assert result.code is ErrorCode.INTERNAL
        assert "RuntimeError" in result.message
    async with asyncio.timeout(2.0):
        assert to_array(((await batcher.submit(_req(2.0), None)).outputs)[0])[0, 0] == 4.0


async def test_missing_output_becomes_internal() -> None:
    batcher = ModelBatcher(
        FakeExecutor(), max_batch_size=4, max_wait_s=0.0, slots=1, output_names=("OUT", "NOT_RETURNED")
    )
    try:
        with pytest.raises(MeshError) as info:
            async with asyncio.timeout(2.0):
                await batcher.submit(_req(1.0), None)
        assert info.value.code is ErrorCode.INTERNAL
    finally:
        await batcher.close()


async def test_several_slots_run_batches_concurrently(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(slots=2)
    executor.hold()
    first = _submit(batcher, _req(1.0))
    await _until(lambda: len(executor.calls) == 1)
    second = _submit(batcher, _req(2.0))
    await _until(lambda: len(executor.calls) == 2)
    third = _submit(batcher, _req(3.0))
    await _until(lambda: batcher.queued == 1)
    assert executor.in_flight == 2  # the third waits for a slot
    executor.release()
    await _gather([first, second, third])
    assert executor.max_in_flight == 2
    assert executor.batch_dims == [1, 1, 1]


async def test_requests_that_arrive_together_are_shared_out_among_the_free_slots(
    make_batcher: BatcherFactory,
) -> None:
    batcher, executor = make_batcher(max_batch_size=8, slots=2)
    executor.hold()
    together = [_submit(batcher, _req(float(i))) for i in range(5)]  # one event-loop turn: queued before any batch
    await _until(lambda: len(executor.calls) == 2)
    assert executor.batch_dims == [3, 2]  # both model instances busy, not one batch of five and an idle slot
    executor.release()
    results = await _gather(together)
    assert [to_array(r[0])[0, 0] for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]


async def test_with_one_slot_free_the_batch_takes_everything_queued(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(max_batch_size=8, slots=2)
    blocker = await _busy(batcher, executor)  # one of the two slots taken
    together = [_submit(batcher, _req(float(i))) for i in range(4)]
    await _until(lambda: len(executor.calls) == 2)
    assert executor.batch_dims == [1, 4]
    executor.release()
    await _gather([blocker, *together])


async def test_batches_that_wait_to_fill_are_not_shared_out(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(max_batch_size=4, slots=2, max_wait_s=1.0)
    together = [_submit(batcher, _req(float(i))) for i in range(4)]
    await _gather(together)
    assert executor.batch_dims == [4]  # the operator asked for full batches: max_wait_s


async def test_max_wait_lets_a_batch_fill(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(max_batch_size=2, max_wait_s=1.0)
    first = _submit(batcher, _req(1.0))
    await asyncio.sleep(0.01)  # the loop takes it and waits (up to 1 s) for company
    assert batcher.queued == 0
    assert executor.calls == []
    started = time.perf_counter()
    second = _submit(batcher, _req(2.0))
    await _gather([first, second])
    assert executor.batch_dims == [2]  # left as soon as it was full, not after max_wait
    assert time.perf_counter() - started < 0.5


async def test_cancelled_submitter_does_not_break_its_batch(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    blocker = await _busy(batcher, executor)
    gone = _submit(batcher, _req(1.0))
    stays = _submit(batcher, _req(2.0))
    await _until(lambda: batcher.queued == 2)
    gone.cancel()
    executor.release()
    results = await _gather([blocker, gone, stays])
    assert isinstance(results[1], asyncio.CancelledError)
    np.testing.assert_array_equal(to_array(results[2][0]), np.full((1, 3), 4.0, np.float32))


async def test_variable_shapes_in_one_batch_are_served(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    blocker = await _busy(batcher, executor)
    short = _submit(batcher, _req(1.0, width=3))
    long = _submit(batcher, _req(2.0, width=5))
    await _until(lambda: batcher.queued == 2)
    executor.release()
    results = await _gather([blocker, short, long])
    assert not isinstance(results[1], BaseException), results[1]
    assert not isinstance(results[2], BaseException), results[2]
    assert results[1][0].shape == (1, 3)
    assert results[2][0].shape == (1, 5)


async def test_duplicate_input_cannot_change_another_requests_outputs(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    blocker = await _busy(batcher, executor)
    twice = (_req(1.0)[0], _req(666.0)[0])
    bad = _submit(batcher, twice)
    good = _submit(batcher, _req(2.0))
    await _until(lambda: batcher.queued == 2)
    executor.release()
    results = await _gather([blocker, bad, good])
    assert not isinstance(results[2], BaseException), results[2]
    np.testing.assert_array_equal(to_array(results[2][0]), np.full((1, 3), 4.0, np.float32))


# ------------------------------------------------------------------------------------------------
# ModelBatcher: admission limits, stats, deadlines, result timing, batch tracing
# ------------------------------------------------------------------------------------------------
def _submit_full(
    batcher: ModelBatcher,
    inputs: tuple[Tensor, ...],
    deadline_ms: float | None = None,
    span: SpanContext | None = None,
) -> asyncio.Task[BatchResult]:
    async def result() -> BatchResult:
        return await batcher.submit(inputs, deadline_ms, span)

    return asyncio.get_running_loop().create_task(result())


async def test_over_max_queued_is_overloaded_at_once(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(limits=Limits(max_queued=2, max_in_flight=100), name="m:1")
    blocker = await _busy(batcher, executor)
    accepted = [_submit(batcher, _req(float(i + 1))) for i in range(2)]
    await _until(lambda: batcher.queued == 2)
    with pytest.raises(MeshError) as info:
        async with asyncio.timeout(0.5):  # refused without waiting for the held batch
            await batcher.submit(_req(9.0), None)
    assert info.value.code is ErrorCode.OVERLOADED
    assert isinstance(info.value.retry_after_ms, int) and info.value.retry_after_ms > 0
    assert "m:1" in info.value.message
    assert batcher.rejected == 1
    assert batcher.queued == 2  # the refused request was not queued
    executor.release()
    results = await _gather([blocker, *accepted])
    assert not [r for r in results if isinstance(r, BaseException)]
    np.testing.assert_array_equal(to_array(results[2][0]), np.full((1, 3), 4.0, np.float32))
    assert 9.0 not in np.concatenate([c["IN"].ravel() for c in executor.calls])
    assert batcher.stats()["rejected"] == 1
    # below the limit again: admitted
    async with asyncio.timeout(2.0):
        out = (await batcher.submit(_req(5.0), None)).outputs
    assert to_array(out[0])[0, 0] == 10.0


async def test_over_max_in_flight_is_overloaded_while_batches_run(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher(slots=2, limits=Limits(max_queued=100, max_in_flight=2))
    executor.hold()
    running = [_submit(batcher, _req(1.0))]
    await _until(lambda: len(executor.calls) == 1)
    running.append(_submit(batcher, _req(2.0)))  # a second batch, in the second slot
    await _until(lambda: len(executor.calls) == 2)
    assert batcher.queued == 0 and batcher.in_flight == 2
    with pytest.raises(MeshError) as info:
        async with asyncio.timeout(0.5):
            await batcher.submit(_req(3.0), None)
    assert info.value.code is ErrorCode.OVERLOADED
    assert info.value.retry_after_ms is not None and info.value.retry_after_ms > 0
    assert batcher.rejected == 1
    executor.release()
    results = await _gather(running)
    assert [to_array(r[0])[0, 0] for r in results] == [2.0, 4.0]
    assert batcher.in_flight == 0
    assert executor.batch_dims == [1, 1]


async def test_stats_have_batch_size_and_queue_wait_histograms(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    blocker = await _busy(batcher, executor)
    waiting = [_submit(batcher, _req(float(i))) for i in range(3)]
    await _until(lambda: batcher.queued == 3)
    assert batcher.stats()["queued"] == 3
    assert batcher.stats()["in_flight"] == 4
    executor.release()
    await _gather([blocker, *waiting])
    stats = batcher.stats()
    assert stats["batch_sizes"] == {"1": 1, "3": 1}
    waits = stats["queue_wait_ms"]
    assert sum(waits.values()) == 4  # one entry per request, not per batch
    for key in waits:
        assert key.startswith("<=")
        bound = int(key.removeprefix("<="))
        assert bound >= 1 and bound & (bound - 1) == 0  # powers of two
    assert stats["queued"] == 0 and stats["in_flight"] == 0
    assert stats["expired"] == 0 and stats["rejected"] == 0


async def test_executor_gets_the_earliest_member_deadline(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    blocker = await _busy(batcher, executor)
    now_ms = time.time() * 1000
    late = _submit(batcher, _req(1.0), deadline_ms=now_ms + 60_000)
    early = _submit(batcher, _req(2.0), deadline_ms=now_ms + 30_000)
    none = _submit(batcher, _req(3.0))
    await _until(lambda: batcher.queued == 3)
    executor.release()
    results = await _gather([blocker, late, early, none])
    assert not [r for r in results if isinstance(r, BaseException)]
    assert executor.batch_dims == [1, 3]
    assert executor.deadlines == [None, now_ms + 30_000]  # the blocker had none


async def test_batch_result_timing_and_total_batch_size(make_batcher: BatcherFactory) -> None:
    batcher, executor = make_batcher()
    blocker = await _busy(batcher, executor)
    two = _submit_full(batcher, _req(1.0, size=2))
    one = _submit_full(batcher, _req(2.0, size=1))
    await _until(lambda: batcher.queued == 2)
    executor.release()
    _, a, b = await _gather([blocker, two, one])
    assert isinstance(a, BatchResult) and isinstance(b, BatchResult)
    for result in (a, b):
        assert result.enqueued_ns <= result.started_ns <= result.finished_ns
        assert result.batch_size == 3  # the whole batch, not this request's share
        assert result.batch_span is None  # no tracer
    assert (a.started_ns, a.finished_ns) == (b.started_ns, b.finished_ns)  # the same batch
    assert a.enqueued_ns <= b.enqueued_ns
    assert a.outputs[0].shape == (2, 3) and b.outputs[0].shape == (1, 3)


@pytest.fixture
def spans() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


async def test_batch_span_is_a_root_linked_to_every_member(
    make_batcher: BatcherFactory, spans: tuple[Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    batcher, executor = make_batcher(tracer=tracer, name="mobilenet_v2:1")
    executor.hold()

    async def member(value: float) -> tuple[SpanContext, BatchResult]:
        # submitted inside the request's own span, as the router does: the batch must not nest under it
        with tracer.start_as_current_span(f"request {value}") as span:
            return span.get_span_context(), await batcher.submit(_req(value), None, span.get_span_context())

    first = asyncio.get_running_loop().create_task(member(1.0))
    await _until(lambda: len(executor.calls) == 1)
    others = [asyncio.get_running_loop().create_task(member(v)) for v in (2.0, 3.0)]
    await _until(lambda: batcher.queued == 2)
    executor.release()
    results = await _gather([first, *others])
    assert not [r for r in results if isinstance(r, BaseException)], results

    batches = [s for s in exporter.get_finished_spans() if s.name.startswith("batch")]
    assert [s.name for s in batches] == ["batch mobilenet_v2:1"] * 2
    second = batches[1]
    members = [ctx for ctx, _ in results[1:]]
    assert [link.context for link in second.links] == members
    assert [link.context for link in batches[0].links] == [results[0][0]]
    member_ids = {ctx.span_id for ctx, _ in results}
    member_traces = {ctx.trace_id for ctx, _ in results}
    for batch in batches:
        assert batch.parent is None  # a root span, not a child of any member
        assert batch.context.trace_id not in member_traces
        assert batch.context.span_id not in member_ids
    assert dict(second.attributes or {}) == {"natriton.batch.size": 2, "natriton.batch.requests": 2}
    # every member's result points at its batch's span
    assert results[0][1].batch_span == batches[0].context
    assert [r.batch_span for _, r in results[1:]] == [second.context, second.context]


async def test_batch_span_without_member_spans_has_no_links(
    make_batcher: BatcherFactory, spans: tuple[Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    batcher, executor = make_batcher(tracer=tracer, name="m:2")
    deadline_ms = time.time() * 1000 + 60_000
    async with asyncio.timeout(2.0):
        result = await batcher.submit(_req(1.0), deadline_ms)  # no span context given
    assert executor.deadlines == [deadline_ms]  # the traced path passes the deadline on too
    (batch,) = exporter.get_finished_spans()
    assert batch.name == "batch m:2"
    assert list(batch.links) == []
    assert batch.parent is None
    assert result.batch_span == batch.context
