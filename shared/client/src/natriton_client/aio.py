"""A small asyncio client for the public protocol (the demo, tests and load tests use it).

Producers do not need it: docs/protocol.md shows the same exchange with a plain NATS client.
"""

from __future__ import annotations

from collections.abc import Sequence

import nats
from nats.aio.client import Client as NATS

from natriton_client.protocol import (
    INFER_SUBJECT,
    JSON,
    MSGPACK,
    Codec,
    Header,
    ImageInput,
    InferRequest,
    InputPayload,
    Reply,
    Tensor,
    TensorInput,
    TextInput,
)

_REQUEST: Codec[InferRequest] = Codec(InferRequest)
_REPLY: Codec[Reply] = Codec(Reply)


class MeshClient:
    """Send inference requests to ``natriton.v1.infer`` and decode the typed replies."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    @classmethod
    async def connect(cls, url: str) -> MeshClient:
        """Connect to NATS at ``url``."""
        return cls(await nats.connect(url, name="natriton-client"))

    async def close(self) -> None:
        """Drain and close the connection."""
        await self.nc.drain()

    async def infer(
        self,
        model: str,
        *,
        image: bytes | None = None,
        tensors: Sequence[Tensor] | None = None,
        text: str | None = None,
        version: str = "",
        top_k: int = 5,
        use_cache: bool = True,
        timeout_s: float = 10.0,
        json: bool = False,
        request_id: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request/reply; the mesh's deadline is ``timeout_s`` too (sent as ``Natriton-Timeout-Ms``).

        Raises ``nats.errors.TimeoutError`` only if no reply at all arrives (the mesh itself answers
        ``deadline_exceeded`` before that).
        """
        given = [p for p in (image, tensors, text) if p is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of image=, tensors= or text=")
        payload: InputPayload
        if image is not None:
            payload = ImageInput(data=image)
        elif text is not None:
            payload = TextInput(text=text)
        else:
            payload = TensorInput(tensors=tuple(tensors or ()))
        request = InferRequest(model=model, version=version, input=payload, top_k=top_k, use_cache=use_cache)
        return await self.send(
            _REQUEST.encode(request, json=json),
            timeout_s=timeout_s,
            json=json,
            request_id=request_id,
            extra_headers=extra_headers,
        )

    async def send(
        self,
        body: bytes,
        *,
        timeout_s: float = 10.0,
        json: bool = False,
        request_id: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send an already-encoded body (any bytes, valid or not) and decode the reply."""
        out = {Header.TIMEOUT_MS: str(int(timeout_s * 1000)), Header.CONTENT_TYPE: JSON if json else MSGPACK}
        if request_id:
            out[Header.REQUEST_ID] = request_id
        out.update(extra_headers or {})
        # a little longer than the mesh's own deadline, so the mesh's deadline_exceeded reply wins
        msg = await self.nc.request(INFER_SUBJECT, body, timeout=timeout_s + 1.0, headers=out)
        return _REPLY.decode(msg.data, json=json)
