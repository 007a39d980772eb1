"""Model hot reload: the router's control endpoint ``natriton.v1.control.models`` (request/reply).

An operator (``natriton models load|unload NAME``) sends a :class:`~natriton.messages.ModelControl`; one router
copy (queue group ``natriton.router``) asks Triton's repository API to load or unload the model (Triton must run
with ``--model-control-mode=explicit``), refreshes and republishes the model catalog at once (an unloaded model's
entry is deleted), and answers a :class:`~natriton.messages.ModelControlReply` or a typed
:class:`~natriton.messages.ErrorReply` (with the NATS micro error headers). The answer is JSON when the request
was JSON (``nats req natriton.v1.control.models '{"type":"model_control","action":"load","model":"noop"}'``),
msgpack otherwise. Loading a model that is loaded reloads it: versions added to or removed from its directory
appear in (or leave) the catalog. Other router copies pick the change up at their next catalog refresh.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue
from tritonclient.utils import InferenceServerException

from natriton import subjects
from natriton.control import decode_request, is_json, respond
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import Codec, ModelControl, ModelControlAnswer, ModelControlReply, VersionState
from natriton.pipeline import error_reply
from natriton.runtime import Inbound, ServiceRuntime
from natriton_router.logic import error_from_triton
from natriton_router.triton import TritonControlError, TritonGateway

log = logging.getLogger(__name__)
REQUESTS: Final[Codec[ModelControl]] = Codec(ModelControl)
ANSWERS: Final[Codec[ModelControlAnswer]] = Codec(ModelControlAnswer)
MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
"""What the control endpoint accepts as a model name (a directory of Triton's repository)."""
SETTLE_TIMEOUT_S: Final = 30.0
"""How long to wait for Triton to finish an unload (its API returns before the model is gone)."""


# ------------------------------------------------------------------------------------------------ pure parts
def decode_control(data: bytes) -> tuple[ModelControl, bool]:
    """The request and whether it was JSON; a malformed one or a bad model name is ``invalid_argument``."""
    request, json_form = decode_request(REQUESTS, data, "model-control")
    if not MODEL_NAME.match(request.model) or request.model in (".", ".."):
        raise invalid_argument(f"invalid model name {request.model[:64]!r}")
    return request, json_form


def control_error(action: str, model: str, status: str, message: str) -> MeshError:
    """A Triton repository-API failure as a typed error with a message an operator can act on."""
    if "not allowed" in message or "model control mode" in message:
        return MeshError(
            ErrorCode.UNAVAILABLE,
            f"cannot {action} {model!r}: Triton does not allow loading and unloading models; run it with "
            f"--model-control-mode=explicit (triton: {message})",
        )
    if "not found in any model repository" in message:
        return MeshError(ErrorCode.NOT_FOUND, f"no model {model!r} in Triton's model repository")
    if "currently loading or unloading" in message or "conflict" in message.lower():
        return MeshError(ErrorCode.UNAVAILABLE, f"cannot {action} {model!r} now: {message}", retry_after_ms=1000)
    error = error_from_triton(status, message)
    if error.code in (ErrorCode.INTERNAL, ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND):
        return MeshError(error.code, f"Triton could not {action} {model!r}: {message}")
    return error


def version_states(index: Sequence[dict[str, Any]], model: str) -> tuple[VersionState, ...]:
    """The versions of ``model`` in Triton's repository index, by version number."""
    states = [
        VersionState(version=str(e.get("version", "")), state=str(e.get("state", "")), reason=str(e.get("reason", "")))
        for e in index
        if e.get("name") == model
    ]
    return tuple(sorted(states, key=lambda s: (len(s.version), s.version)))


def settled(states: Sequence[VersionState], action: str) -> bool:
    """Whether Triton has finished ``action``: nothing loading or unloading, and after an unload nothing ready."""
    busy = {"LOADING", "UNLOADING"} | ({"READY"} if action == "unload" else set())
    return not any(s.state in busy for s in states)


def outcome_message(action: str, model: str, ready: Sequence[str]) -> str:
    """One line for the operator."""
    if action == "unload":
        return f"{model} unloaded" if not ready else f"{model} still serves versions {', '.join(ready)}"
    if ready:
        return f"{model} loaded: versions {', '.join(ready)} ready"
    return f"{model} loaded but no version is ready"


async def catalog_keys(kv: KeyValue) -> list[str]:
    """The models the catalog bucket holds now (none when it is empty)."""
    try:
        return list(await kv.keys())
    except NoKeysError:
        return []


# ------------------------------------------------------------------------------------------------ the endpoint
class ModelControlEndpoint:
    """Serves ``natriton.v1.control.models`` for one router copy."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        triton: TritonGateway,
        refresh_catalog: Callable[[], Awaitable[None]],
        ready_versions: Callable[[str], tuple[str, ...]],
    ) -> None:
        self.runtime = runtime
        self.triton = triton
        self.refresh_catalog = refresh_catalog
        self.ready_versions = ready_versions
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self.runtime.add_endpoint(
            "control_models",
            subjects.CONTROL_MODELS,
            self.handle,
            queue_group=subjects.queue_group(self.runtime.name),
            on_error=self.reply_error,
            max_concurrency=4,
        )

    async def handle(self, inbound: Inbound) -> None:
        request, json_form = decode_control(inbound.data)
        async with self._lock:  # one action at a time per copy: Triton refuses overlapping ones anyway
            states = await self._states(request.model)
            if not states:
                raise MeshError(ErrorCode.NOT_FOUND, f"no model {request.model!r} in Triton's model repository")
            log.info("model control: %s %s", request.action, request.model)
            try:
                if request.action == "load":
                    await self.triton.load_model(request.model)
                else:
                    await self.triton.unload_model(request.model)
            except TritonControlError as exc:
                raise control_error(request.action, request.model, exc.status, exc.message) from exc
            states = await self._wait_settled(request.model, request.action)
            await self.refresh_catalog()
        ready = self.ready_versions(request.model)
        reply = ModelControlReply(
            action=request.action,
            model=request.model,
            message=outcome_message(request.action, request.model, ready),
            ready_versions=ready,
            states=states,
        )
        log.info("model control: %s", reply.message)
        await respond(self.runtime, inbound.reply, ANSWERS, reply, json_form)

    async def _states(self, model: str) -> tuple[VersionState, ...]:
        try:
            return version_states(await self.triton.repository_index(), model)
        except InferenceServerException as exc:
            raise error_from_triton(exc.status(), exc.message() or str(exc)) from exc

    async def _wait_settled(self, model: str, action: str) -> tuple[VersionState, ...]:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            states = await self._states(model)
            if settled(states, action) or time.monotonic() > deadline:
                return states
            await asyncio.sleep(0.1)

    async def reply_error(self, inbound: Inbound, error: MeshError) -> None:
        """``on_error``: a typed error reply with the NATS micro error headers."""
        await respond(self.runtime, inbound.reply, ANSWERS, error_reply("", error), is_json(inbound.data))
