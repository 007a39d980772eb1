"""``natriton stream``: cameras (video sources) the mesh reads, added and removed at run time.

    natriton stream ls                             every camera: source, mode, owner, state, frames, live page
    natriton stream add CAMERA URL [--fps 5] [--mode realtime|reliable] [--model M] [--no-change-gate] [--loop]
                                                   [--audio-model silero_vad]   its sound: speech events too
    natriton stream rm CAMERA
    natriton stream record CAMERA [--seconds 10] [--out FILE]   annotated output (boxes, track ids) as mp4

All go to ingest's control endpoint ``natriton.v1.control.streams``; the sources live in the NATS KV bucket
``natriton_streams`` (so ``nats kv ls natriton_streams`` shows them too). ``record`` then asks the ingest copy that
reads the camera, over HTTP at its live page's address (``page`` in ``ls``), and downloads the file.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from natriton_dev.cli.common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    ERROR_EXIT_CODES,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    ConnectTimeoutOption,
    JsonOption,
    NatsUrlOption,
    Output,
    PlainTable,
    VerboseOption,
    control_request,
    plain,
    reported,
    resolve_nats_url,
    run,
    shown_url,
)

DEFAULT_TIMEOUT_S = 10.0
DOWNLOAD_WAIT_S = 60.0
"""``record``: how long after the recording's end to wait for the file (the encoder finishing)."""
STATE_STYLES = {"live": "green", "connecting": "yellow", "lost": "red", "ended": "dim"}

app = typer.Typer(
    name="stream",
    help="Cameras: natriton stream ls | add CAMERA URL | rm CAMERA | record CAMERA (no restarts).",
    no_args_is_help=True,
)
CameraArgument = Annotated[str, typer.Argument(help="The camera's id (1 to 64 of A-Z a-z 0-9 _ -).")]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for ingest's answer.")]


@app.command("ls")
def list_command(
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Every camera: its source, mode, model, the ingest copy reading it, the source's state, frame counts and the
    live page that shows it (annotated frames, fps, latency).

    JSON: {"ok", "nats_url", "action", "message", "streams": [{"source": {...}, "status": {...} | null}]}.
    """
    from natriton.messages import StreamControl

    answer = _send(StreamControl(action="list"), nats_url, connect_timeout, timeout_s, json_output, verbose)
    if answer is not None:
        out, reply = answer
        out.print(streams_table(plain(reply)["streams"]) if reply.streams else "no cameras")


@app.command("add")
def add_command(
    camera: CameraArgument,
    url: Annotated[str, typer.Argument(help="rtsp:// or http(s):// stream, a video file, or a folder of images.")],
    fps: Annotated[float, typer.Option(min=0, max=240, help="Frames per second to sample; 0: every frame.")] = 0.0,
    mode: Annotated[
        str, typer.Option(help="realtime (drop stale frames, bounded latency) or reliable (every frame, in order).")
    ] = "realtime",
    model: Annotated[str, typer.Option(help="The detector to run.")] = "face_detector",
    change_gate: Annotated[
        bool, typer.Option("--change-gate/--no-change-gate", help="Reuse detections while the scene is unchanged.")
    ] = True,
    loop: Annotated[bool, typer.Option(help="Files: start again at the end.")] = False,
    audio_model: Annotated[
        str,
        typer.Option(
            help="A speech model (e.g. silero_vad) for the source's audio track: speech_start/speech_end events on "
            "natriton.v1.audio.events.CAMERA. Default: the sound is ignored."
        ),
    ] = "",
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Add a camera (or replace its source); an ingest copy starts reading it at once.

    JSON: as for ls, with the camera added.
    """
    from natriton.messages import StreamControl, StreamMode, StreamSource

    try:
        stream_mode = StreamMode(mode)
    except ValueError:
        raise typer.BadParameter("use realtime or reliable", param_hint="--mode") from None
    source = StreamSource(
        camera=camera,
        url=url,
        fps=fps,
        mode=stream_mode,
        model=model,
        change_gate=change_gate,
        loop=loop,
        audio_model=audio_model,
    )
    answer = _send(
        StreamControl(action="add", source=source), nats_url, connect_timeout, timeout_s, json_output, verbose
    )
    if answer is not None:
        answer[0].print(answer[1].message)


@app.command("rm")
def remove_command(
    camera: CameraArgument,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Remove a camera; its owner stops reading it. Exits 11 (not_found) when there is no such camera.

    JSON: as for ls, with the camera removed.
    """
    from natriton.messages import StreamControl

    answer = _send(
        StreamControl(action="remove", camera=camera), nats_url, connect_timeout, timeout_s, json_output, verbose
    )
    if answer is not None:
        answer[0].print(answer[1].message)


@app.command("record")
def record_command(
    camera: CameraArgument,
    seconds: Annotated[int, typer.Option(min=1, max=600, help="How long to record.")] = 10,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to save the mp4 (default: the recording's name, in this folder).", dir_okay=False
        ),
    ] = None,
    nats_url: NatsUrlOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_CONNECT_TIMEOUT_S,
    timeout_s: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Record a camera's annotated output (boxes and track ids, as on its live page) to an mp4 and download it.

    Finds the ingest copy that reads the camera (its page in ``natriton stream ls``), asks it to record for
    SECONDS (POST <page>/<camera>/record), waits, and saves the file. Exits 11 when there is no such camera.

    JSON: {"ok", "camera", "file", "url", "out", "bytes", "seconds"}.
    """
    from natriton.messages import Codec, ErrorReply, StreamControl, StreamControlAnswer
    from natriton.streams import CAMERA_ID
    from natriton.subjects import CONTROL_STREAMS
    from natriton_client.protocol import ErrorCode

    out = Output(json_mode=json_output, verbose=verbose)
    with reported(out):
        if not CAMERA_ID.fullmatch(camera):
            raise CliError(f"camera id {camera[:64]!r}: use 1 to 64 of A-Z a-z 0-9 _ -", EXIT_USAGE)
        resolved = resolve_nats_url(nats_url)
        out.note(f"NATS {resolved.describe()}")
        answers: Codec[StreamControlAnswer] = Codec(StreamControlAnswer)
        requests: Codec[StreamControl] = Codec(StreamControl)
        payload = requests.encode(StreamControl(action="list"))
        reply = run(
            control_request(resolved.url, connect_timeout, timeout_s, CONTROL_STREAMS, payload, answers, "ingest")
        )
        if isinstance(reply, ErrorReply):
            raise CliError(f"{reply.code.value}: {reply.message}", ERROR_EXIT_CODES.get(reply.code, EXIT_FAILED))
        info = next((s for s in reply.streams if s.source.camera == camera), None)
        if info is None:
            raise CliError(f"no camera {camera} (natriton stream ls lists them)", ERROR_EXIT_CODES[ErrorCode.NOT_FOUND])
        page = info.status.page if info.status is not None else ""
        if not page:
            raise CliError(f"camera {camera} has no live page yet: no ingest copy reads it, or its copy serves no HTTP")
        base = page.removesuffix("/").removesuffix("/streams")
        out.note(f"live page {page}")
        started = _http_json("POST", f"{base}/streams/{camera}/record?seconds={seconds}", timeout_s)
        url = base + str(started["url"])
        out.print(f"recording {camera} for {seconds} s into {started['file']} ({page})")
        time.sleep(seconds)
        data = _download(url, timeout_s, time.monotonic() + DOWNLOAD_WAIT_S)
        target = out_path or Path(str(started["file"]))
        target.write_bytes(data)
        out.emit({"ok": True, "camera": camera, "file": started["file"], "url": url, "out": str(target),
                  "bytes": len(data), "seconds": seconds})  # fmt: skip
        out.print(f"saved {target} ({len(data) / 1024:.0f} KB)")


def _http(method: str, url: str, timeout_s: float) -> tuple[int, bytes]:
    """Status and body of one request (HTTP errors are answers too); CliError when nothing answers."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach {url} ({reason})", EXIT_UNREACHABLE) from None


def _error_of(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:200].decode('utf-8', 'replace').strip()}"


def _http_json(method: str, url: str, timeout_s: float) -> dict[str, Any]:
    status, body = _http(method, url, timeout_s)
    if status != 200:
        raise CliError(f"{url}: {_error_of(status, body)}")
    document: dict[str, Any] = json.loads(body)
    return document


def _download(url: str, timeout_s: float, deadline: float) -> bytes:
    """The recording's bytes once it is finished (409 while it is still being written)."""
    while True:
        status, body = _http("GET", url, max(timeout_s, 30.0))
        if status == 200:
            return body
        if status != 409 or time.monotonic() > deadline:
            raise CliError(f"{url}: {_error_of(status, body)}")
        time.sleep(0.5)


def _send(
    request: Any, nats_url: str | None, connect_timeout: float, timeout_s: float, json: bool, verbose: bool
) -> tuple[Output, Any] | None:
    """Send ``request``, emit the JSON document, and return the output and the reply (None in JSON mode)."""
    from natriton.messages import Codec, ErrorReply, StreamControl, StreamControlAnswer
    from natriton.subjects import CONTROL_STREAMS

    out = Output(json_mode=json, verbose=verbose)
    with reported(out):
        resolved = resolve_nats_url(nats_url)
        out.note(f"NATS {resolved.describe()}")
        payload = Codec(StreamControl).encode(request)
        answers: Codec[StreamControlAnswer] = Codec(StreamControlAnswer)
        reply = run(
            control_request(resolved.url, connect_timeout, timeout_s, CONTROL_STREAMS, payload, answers, "ingest")
        )
        if isinstance(reply, ErrorReply):
            raise CliError(f"{reply.code.value}: {reply.message}", ERROR_EXIT_CODES.get(reply.code, EXIT_FAILED))
        document = plain(reply)
        document.pop("type", None)
        out.emit({"ok": True, "nats_url": shown_url(resolved.url), **document})
        return None if out.json_mode else (out, reply)
    return None


def streams_table(streams: list[dict[str, Any]]) -> PlainTable:
    """One row per camera."""
    table = PlainTable(
        "camera", "source", "mode", "model", "state", "owner", "frames", "page", box=None, header_style="bold"
    )
    for info in streams:
        source, status = info["source"], info.get("status") or {}
        state = str(status.get("state", "waiting"))
        frames = f"{status.get('frames_emitted', 0)} ({status.get('reconnects', 0)} reconnects)" if status else "-"
        table.add_row(
            Text(str(source["camera"]), style="bold"),
            str(source["url"]),
            f"{source['mode']}" + (f" {source['fps']:g} fps" if source.get("fps") else ""),
            str(source["model"]),
            Text(state, style=STATE_STYLES.get(state, "")),
            str(status.get("owner", "")) or "-",
            frames,
            str(status.get("page", "")) or "-",
        )
        if status.get("last_error"):
            table.add_row("", Text(f"last error: {status['last_error']}", style="red"), end_section=True)
    return table
