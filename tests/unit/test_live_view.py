"""The live page's pure parts: drawing puts box pixels where the box is, the stats JSON, name checks, the routes
(on a fake camera), a short recording, the metrics server's route table, the access token and the recordings'
retention sweep."""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from natriton.messages import SourceState, StreamMode, StreamSource
from natriton.metrics import MetricsServer, Request, Response, registry_for, route_for
from natriton.runtime import ServiceRuntime
from natriton.settings import CommonSettings, SettingsError, load_settings
from natriton.video.source import SourceStats
from natriton_client.protocol import ErrorCode, FrameResult, TrackedObject
from natriton_ingest import live as live_module
from natriton_ingest.cameras import CameraCounters
from natriton_ingest.live import (
    BOX_COLOUR,
    PAGE,
    STALE_PART_S,
    AudioView,
    LiveView,
    Swept,
    annotate,
    box_width,
    gate_savings,
    is_camera_id,
    is_recording_name,
    recording_rate,
    render_jpeg,
    sweep_recordings,
)
from natriton_ingest.settings import Settings
from tests.unit.test_metrics import http_get

W, H = 320, 240
BOX = (60.0, 40.0, 180.0, 200.0)


def frame(value: int = 90) -> npt.NDArray[np.uint8]:
    return np.full((H, W, 3), value, np.uint8)


def result(number: int = 7, objects: tuple[TrackedObject, ...] | None = None, **kw: object) -> FrameResult:
    if objects is None:
        objects = (TrackedObject(track_id=3, label="face", score=0.91, box=BOX),)
    return FrameResult(
        camera="cam-1", frame_number=number, captured_ms=1_000, published_ms=1_085, width=W, height=H,
        objects=objects, model="face_detector", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def magenta(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 180) & (g < 90) & (b > 180)


# ------------------------------------------------------------------ drawing
def test_annotate_draws_the_box_where_the_box_is() -> None:
    pixels = frame()
    out = np.asarray(annotate(pixels, result()))
    assert out.shape == (H, W, 3)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    width = box_width(W, H)
    # all four edges, along their whole length, in the box colour
    assert (out[y1:y2, x1] == BOX_COLOUR).all() and (out[y1:y2, x2] == BOX_COLOUR).all()
    assert (out[y2, x1:x2] == BOX_COLOUR).all() and (out[y1, x1:x2] == BOX_COLOUR).all()
    assert (out[y1:y2, x1 + width - 1] == BOX_COLOUR).all()  # the line is `width` pixels thick, inwards
    # inside the box and away from it the frame is untouched; the input array is not changed
    assert (out[(y1 + y2) // 2, (x1 + x2) // 2] == 90).all()
    assert (out[H - 5, W - 5] == 90).all() and (out[y2 + 10, x1] == 90).all()
    assert (pixels == 90).all()
    # the label (track id) sits just above the box, on the box colour
    label = magenta(out[:y1, x1 : x1 + 40])
    assert label.sum() > 100
    ys, xs = np.nonzero(magenta(out))
    assert ys.min() >= y1 - 30 and xs.min() >= x1  # nothing drawn elsewhere


def test_annotate_clamps_boxes_and_skips_frames_without_objects() -> None:
    assert (np.asarray(annotate(frame(), result(objects=()))) == 90).all()
    outside = TrackedObject(track_id=1, label="face", score=0.5, box=(-50.0, -20.0, 400.0, 300.0))
    out = np.asarray(annotate(frame(), result(objects=(outside,))))
    assert (out[:, 0] == BOX_COLOUR).all() and (out[:, W - 1] == BOX_COLOUR).all()


def test_render_jpeg_keeps_the_box_colour_visible() -> None:
    jpeg = render_jpeg(frame(), result())
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (W, H)
    rgb = np.asarray(image.convert("RGB"))
    x1, y1, _, y2 = (int(v) for v in BOX)
    band = magenta(rgb[y1 + 5 : y2 - 5, x1 : x1 + box_width(W, H)])
    assert band.mean() > 0.9


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["cam-1", "A_b-9", "x" * 64])
def test_camera_ids_that_pass(name: str) -> None:
    assert is_camera_id(name)


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "..", "../etc/passwd", "..%2f", "cam\n", "cam.jpg", "a/b", "a b", "caf\u00e9", "%2e%2e"]
)
def test_camera_ids_that_do_not(name: str) -> None:
    assert not is_camera_id(name)


def test_recording_names() -> None:
    assert is_recording_name("cam-1-20261130-120000-1.mp4")
    for bad in ("../etc/passwd", "..", "a/b.mp4", "x.mp4.part", ".mp4", "x.mp4\n", "x.MP4", "%2e%2fx.mp4", "a.b.mp4"):
        assert not is_recording_name(bad), bad


# ------------------------------------------------------------------ numbers
@dataclass
class FakeCamera:
    source: StreamSource
    counters: CameraCounters = field(default_factory=CameraCounters)
    state: SourceState = SourceState.LIVE
    last_error: str = ""

    def stats(self) -> SourceStats:
        return SourceStats(state=self.state, frames_read=12, frames_emitted=11, reconnects=1,
                           last_error=self.last_error)  # fmt: skip


def fake_camera(camera: str = "cam-1") -> FakeCamera:
    cam = FakeCamera(StreamSource(camera=camera, url="/clips/a.mp4", mode=StreamMode.REALTIME))
    cam.counters.sent, cam.counters.answered, cam.counters.reused = 8, 6, 2
    cam.counters.dropped, cam.counters.errors, cam.counters.published = 1, 1, 8
    now = time.monotonic()
    cam.counters.published_at.extend([now - 1.0, now - 0.5, now])
    cam.counters.latencies_ms.extend([50.0, 60.0, 70.0, 200.0])
    return cam


def test_gate_savings() -> None:
    counters = CameraCounters()
    assert gate_savings(counters) == 0.0
    counters.answered, counters.reused = 3, 1
    assert gate_savings(counters) == 0.25


def test_recording_rate() -> None:
    assert recording_rate(0.0) == 10 and recording_rate(500.0) == 120 and recording_rate(0.2) == 1
    assert abs(float(recording_rate(23.976)) - 23.976) < 0.01


def test_streams_json_shape(tmp_path: Path) -> None:
    cameras: dict[str, FakeCamera] = {"cam-1": fake_camera(), "cam-2": fake_camera("cam-2")}
    cameras["cam-1"].last_error = "rtsp://user:secret@host/x: refused"
    live = LiveView(lambda: cameras, tmp_path, owner="ingest-1")
    live.on_frame("cam-1", result(), frame())
    view = json.loads(asyncio.run(live.handle(Request.parse("GET", "/streams.json")))[2])
    assert view["owner"] == "ingest-1" and view["poll_ms"] == 500 and view["updated_ms"] > 0
    assert [c["camera"] for c in view["cameras"]] == ["cam-1", "cam-2"]
    cam = view["cameras"][0]
    assert set(cam) == {
        "camera", "state", "mode", "model", "fps", "latency_p50_ms", "latency_p95_ms", "sent", "answered", "reused",
        "dropped", "errors", "published", "gate_savings", "frames_read", "frames_emitted", "reconnects", "last_error",
        "frame", "image", "recording",
    }  # fmt: skip
    assert cam["state"] == "live" and cam["mode"] == "realtime" and cam["model"] == "face_detector"
    assert cam["fps"] == pytest.approx(2.0, rel=0.05)
    assert cam["latency_p50_ms"] == 65.0 and cam["latency_p95_ms"] > 150
    assert (cam["sent"], cam["answered"], cam["reused"], cam["dropped"], cam["errors"]) == (8, 6, 2, 1, 1)
    assert cam["gate_savings"] == 0.25
    assert "secret" not in cam["last_error"]
    assert cam["frame"] == {
        "number": 7, "width": W, "height": H, "captured_ms": 1000, "latency_ms": 85, "reused": False, "error": None,
        "objects": [{"track_id": 3, "label": "face", "score": 0.91, "box": list(BOX)}],
    }  # fmt: skip
    assert cam["image"] == "/streams/cam-1.jpg?n=7" and cam["recording"] is None
    assert view["cameras"][1]["frame"] is None and view["cameras"][1]["image"] is None
    # a frame that could not be analysed says why
    live.on_frame("cam-2", result(number=1, objects=(), error=ErrorCode.DEADLINE_EXCEEDED), frame())
    assert live.view().cameras[1].frame.error == "deadline_exceeded"  # type: ignore[union-attr]
    # a camera this copy stopped reading leaves the page, and its frames are forgotten
    del cameras["cam-2"]
    assert [c.camera for c in live.view().cameras] == ["cam-1"] and set(live.frames) == {"cam-1"}
    # live audio streams this copy owns are on the page too
    assert view["audio"] == []
    live.audio_streams = lambda: [AudioView(stream="mic-1", time_s=1.5, speaking=True, next_seq=15, recent=[0.1, 0.9])]
    [voice] = json.loads(asyncio.run(live.handle(Request.parse("GET", "/streams.json")))[2])["audio"]
    assert voice == {"stream": "mic-1", "time_s": 1.5, "speaking": True, "next_seq": 15, "recent": [0.1, 0.9]}


# ------------------------------------------------------------------ routes
async def get(live: LiveView, target: str, method: str = "GET") -> Response:
    return await live.handle(Request.parse(method, target))


async def test_routes(tmp_path: Path) -> None:
    cameras: dict[str, FakeCamera] = {}
    live = LiveView(lambda: cameras, tmp_path)
    status, content_type, page = await get(live, "/streams")
    assert status == 200 and content_type.startswith("text/html")
    assert b"No cameras" in page and b"/streams.json" in page
    assert b"<script src" not in page and b"<link" not in page and b"http" not in page.replace(b"HTTP ", b"")
    assert json.loads((await get(live, "/streams.json"))[2])["cameras"] == []
    cameras["cam-1"] = fake_camera()
    assert (await get(live, "/streams/cam-1.jpg"))[0] == 404  # no frame yet
    for number in range(5, 12):
        live.on_frame("cam-1", result(number=number), frame(number * 10))
    status, content_type, jpeg = await get(live, "/streams/cam-1.jpg?n=9")
    assert status == 200 and content_type == "image/jpeg"
    assert abs(int(np.asarray(Image.open(io.BytesIO(jpeg)))[H - 2, W - 2, 0]) - 90) <= 3  # frame 9, not the newest
    assert (await get(live, "/streams/cam-1.jpg?n=9"))[2] is jpeg  # encoded once per frame
    newest = np.asarray(Image.open(io.BytesIO((await get(live, "/streams/cam-1.jpg"))[2])))
    assert abs(int(newest[H - 2, W - 2, 0]) - 110) <= 3  # no frame asked for: the newest (11)
    for gone in ("1", "7", "12", "x", "-1"):  # never another frame than the one asked for
        assert (await get(live, f"/streams/cam-1.jpg?n={gone}"))[0] == 410
    bad_paths = (
        "/streams/..%2f.jpg",
        "/streams/nope.jpg",
        "/streams/../x.jpg",
        "/streams/a%00.jpg",
        "/recordings/../etc/passwd",
        "/recordings/..%2f..%2fetc%2fpasswd",
        "/recordings/x.mp4",
        "/other",
    )
    for bad in bad_paths:
        assert (await get(live, bad))[0] == 404, bad
    assert (await get(live, "/streams.json", "POST"))[0] == 405
    assert (await get(live, "/streams/cam-1/record"))[0] == 405
    assert (await get(live, "/streams/cam-1/record?seconds=0", "POST"))[0] == 400
    assert (await get(live, "/streams/cam-1/record?seconds=601", "POST"))[0] == 400
    assert (await get(live, "/streams/cam-1/record?seconds=x", "POST"))[0] == 400
    assert (await get(live, "/streams/nope/record?seconds=1", "POST"))[0] == 404
    assert (await get(live, "/streams/..%2f/record?seconds=1", "POST"))[0] == 404


async def test_a_recording_is_a_playable_mp4_of_annotated_frames(tmp_path: Path) -> None:
    cameras = {"cam-1": fake_camera()}
    live = LiveView(lambda: cameras, tmp_path / "rec")
    status, _, body = await get(live, "/streams/cam-1/record?seconds=1", "POST")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["url"] == f"/recordings/{answer['file']}" and is_recording_name(answer["file"])
    assert (await get(live, "/streams/cam-1/record?seconds=1", "POST"))[0] == 409  # one at a time per camera
    assert (await get(live, answer["url"]))[0] == 409  # still recording
    listing = json.loads((await get(live, "/recordings"))[2])
    assert [a["file"] for a in listing["active"]] == [answer["file"]]
    for number in range(8):
        live.on_frame("cam-1", result(number=number), frame())
        await asyncio.sleep(0.02)
    recording = live.recordings[answer["file"]]
    await asyncio.to_thread(recording.done.wait, 10)
    status, content_type, data = await get(live, answer["url"])
    assert status == 200 and content_type == "video/mp4", data[:200]
    path = tmp_path / "mp4" / "out.mp4"
    path.parent.mkdir()
    path.write_bytes(data)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 8 and decoded[0].shape == (H, W, 3)
    x1, y1, _, y2 = (int(v) for v in BOX)
    assert magenta(decoded[0][y1 + 5 : y2 - 5, x1 : x1 + box_width(W, H)]).mean() > 0.5
    listing = json.loads((await get(live, "/recordings"))[2])
    assert listing["active"] == [] and [r["file"] for r in listing["recordings"]] == [answer["file"]]
    assert not list((tmp_path / "rec").glob("*.part"))


async def test_a_recording_without_frames_fails_clearly(tmp_path: Path) -> None:
    live = LiveView(lambda: {"cam-1": fake_camera()}, tmp_path)
    file = json.loads((await get(live, "/streams/cam-1/record?seconds=1", "POST"))[2])["file"]
    await asyncio.to_thread(live.recordings[file].done.wait, 10)
    status, _, body = await get(live, f"/recordings/{file}")
    assert status == 404 and b"no frames" in body
    assert json.loads((await get(live, "/recordings"))[2])["failed"][0]["file"] == file


# ------------------------------------------------------------------ the server's route table
def test_route_for_matches_prefixes_but_never_the_builtin_paths() -> None:
    async def a(request: Request) -> Response:
        return 200, "text/plain", b"a"

    async def b(request: Request) -> Response:
        return 200, "text/plain", b"b"

    routes = {"/streams": a, "/streams/special": b, "/metrics": b, "/": a}
    assert route_for(routes, "/streams") is a and route_for(routes, "/streams/x.jpg") is a
    assert route_for(routes, "/streams/special/x") is b
    assert route_for(routes, "/streamsx") is a  # only through "/"
    assert route_for({"/streams": a}, "/streamsx") is None
    for builtin in ("/metrics", "/healthz", "/readyz"):
        assert route_for(routes, builtin) is None
    request = Request.parse("POST", "/streams/c/record?seconds=5&seconds=7&x=%2F")
    assert (request.method, request.path) == ("POST", "/streams/c/record")
    assert dict(request.query) == {"seconds": "5", "x": "/"}


async def test_the_metrics_server_serves_app_routes_next_to_the_builtin_ones(tmp_path: Path) -> None:
    rt = ServiceRuntime("ingest", "1.2.3", CommonSettings(instance_id="s"))
    live = LiveView(lambda: {"cam-1": fake_camera()}, tmp_path)
    live.on_frame("cam-1", result(), frame())

    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    routes = {**live.routes(), "/broken": broken}
    server = MetricsServer(registry_for(rt), lambda: "", "127.0.0.1", 0, routes=routes)
    await server.start()
    try:
        assert await http_get(server.port, "/healthz") == (200, b"ok\n")
        assert (await http_get(server.port, "/metrics"))[0] == 200
        assert (await http_get(server.port, "/streams"))[0] == 200
        status, body = await http_get(server.port, "/streams.json?x=1")
        assert status == 200 and json.loads(body)["cameras"][0]["camera"] == "cam-1"
        status, body = await http_get(server.port, "/streams/cam-1.jpg?n=7")
        assert status == 200 and body.startswith(b"\xff\xd8")
        assert (await http_get(server.port, "/streams/cam-1.jpg", "HEAD")) == (200, b"")
        assert (await http_get(server.port, "/recordings/../etc/passwd"))[0] == 404
        assert (await http_get(server.port, "/broken"))[0] == 500
        assert (await http_get(server.port, "/nothing"))[0] == 404
        # a POST with a body: the body is read (no reset), the route answers
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /streams/cam-1/record?seconds=0 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        await server.close()


# ------------------------------------------------------------------ settings
def test_public_url_and_recordings_dir_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "box")
    settings = load_settings(Settings, {"NATRITON_METRICS_PORT": "9555"})
    assert settings.public_base_url() == "http://box:9555"
    assert settings.recordings_path().name == "natriton-recordings"
    assert load_settings(Settings, {"NATRITON_METRICS_PORT": "0"}).public_base_url() == ""
    env = {"NATRITON_PUBLIC_URL": "https://cams.example/ingest-0/", "NATRITON_RECORDINGS_DIR": "/data/rec"}
    settings = load_settings(Settings, env)
    assert settings.public_base_url() == "https://cams.example/ingest-0"
    assert settings.recordings_path() == Path("/data/rec")
    with pytest.raises(ValueError, match="public_url"):
        load_settings(Settings, {"NATRITON_PUBLIC_URL": "cams.example"})


# ------------------------------------------------------------------ the access token
TOKEN = "s3cret-Token_42"
GUARDED = (
    ("GET", "/streams"),
    ("GET", "/streams/"),
    ("HEAD", "/streams"),
    ("GET", "/streams.json"),
    ("GET", "/streams/cam-1.jpg?n=7"),
    ("GET", "/streams/nope.jpg"),
    ("POST", "/streams/cam-1/record?seconds=1"),
    ("GET", "/recordings"),
    ("GET", "/recordings/x.mp4"),
    ("GET", "/recordings/../etc/passwd"),
)


def with_query(target: str, query: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}{query}"


async def test_with_a_token_every_route_wants_it(tmp_path: Path) -> None:
    live = LiveView(lambda: {"cam-1": fake_camera()}, tmp_path, token=TOKEN)
    live.on_frame("cam-1", result(), frame())
    wrong = ("", "token=", "token=wrong", f"token={TOKEN[:-1]}", f"token={TOKEN}x", f"token={TOKEN.upper()}",
             "token=%C3%A9", f"Token={TOKEN}", f"t={TOKEN}")  # fmt: skip
    for method, target in GUARDED:
        for query in wrong:
            answer = await get(live, with_query(target, query) if query else target, method)
            assert answer == (401, "text/plain; charset=utf-8", b"unauthorized\n"), (method, target, query)
    assert live.recordings == {}  # the refused POSTs started nothing
    # with the token, each route answers as it does without one set
    assert (await get(live, f"/streams?token={TOKEN}"))[0] == 200
    assert json.loads((await get(live, f"/streams.json?token={TOKEN}"))[2])["cameras"][0]["camera"] == "cam-1"
    status, content_type, _ = await get(live, f"/streams/cam-1.jpg?n=7&token={TOKEN}")
    assert (status, content_type) == (200, "image/jpeg")
    assert (await get(live, f"/streams/nope.jpg?token={TOKEN}"))[0] == 404
    assert (await get(live, f"/recordings?token={TOKEN}"))[0] == 200
    assert (await get(live, f"/streams/cam-1/record?seconds=0&token={TOKEN}", "POST"))[0] == 400
    # a token with characters that need escaping in a URL
    odd = LiveView(lambda: {}, tmp_path, token="a b&c=d/é")
    assert (await get(odd, "/streams.json?token=a+b%26c%3Dd%2F%C3%A9"))[0] == 200
    assert (await get(odd, "/streams.json?token=a+b"))[0] == 401


async def test_without_a_token_nothing_is_asked_for(tmp_path: Path) -> None:
    live = LiveView(lambda: {}, tmp_path)
    assert (await get(live, "/streams"))[0] == 200
    assert (await get(live, "/streams.json?token=anything"))[0] == 200


async def test_the_token_is_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(live_module.hmac, "compare_digest", spy)
    live = LiveView(lambda: {}, tmp_path, token=TOKEN)
    assert (await get(live, "/streams.json?token=nope"))[0] == 401
    assert (await get(live, f"/streams.json?token={TOKEN}"))[0] == 200
    assert calls == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


async def test_metrics_and_health_stay_open_when_the_page_wants_a_token(tmp_path: Path) -> None:
    rt = ServiceRuntime("ingest", "1.2.3", CommonSettings(instance_id="s"))
    live = LiveView(lambda: {"cam-1": fake_camera()}, tmp_path, token=TOKEN)
    server = MetricsServer(registry_for(rt), lambda: "", "127.0.0.1", 0, routes=live.routes())
    await server.start()
    try:
        assert await http_get(server.port, "/healthz") == (200, b"ok\n")
        assert await http_get(server.port, "/readyz") == (200, b"ready\n")
        assert (await http_get(server.port, "/metrics"))[0] == 200
        assert await http_get(server.port, "/streams") == (401, b"unauthorized\n")
        assert (await http_get(server.port, "/streams.json?token=x"))[0] == 401
        status, body = await http_get(server.port, f"/streams?token={TOKEN}")
        assert status == 200 and body == PAGE and TOKEN.encode() not in body
        assert (await http_get(server.port, f"/recordings?token={TOKEN}"))[0] == 200
    finally:
        await server.close()


def test_the_page_passes_its_token_on_to_everything_it_fetches() -> None:
    script = PAGE.decode()
    assert 'new URLSearchParams(location.search).get("token")' in script
    found = re.findall(r"fetch\(([^,)]+)|\.src = ([^;]+);|\.href = ([^;]+);", script)
    requests = [r for r in found if "URL.createObjectURL(blob)" not in r]  # an image already fetched, in memory
    assert len(found) - len(requests) == 1
    assert len(requests) == 4, requests  # record, poll, the image, the recording's link
    assert all("withToken(" in "".join(found) for found in requests), requests


def ingest_settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(Settings, {"NATRITON_RECORDINGS_DIR": str(tmp_path / "rec"), **env})


def test_from_settings_reads_the_token_file_once_and_never_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n\n")
    env = {"NATRITON_LIVE_TOKEN_FILE": str(token_file), "NATRITON_RECORDINGS_MAX_AGE_DAYS": "0.5",
           "NATRITON_RECORDINGS_MAX_BYTES": "1000"}  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        live = LiveView.from_settings(lambda: {}, ingest_settings(tmp_path, **env), owner="ingest-1")
    token_file.write_text("changed")  # read once, at start
    assert (live.owner, live.recordings_dir) == ("ingest-1", tmp_path / "rec")
    assert (live.max_age_s, live.max_bytes) == (43_200, 1000)
    assert asyncio.run(live.handle(Request.parse("GET", f"/streams.json?token={TOKEN}")))[0] == 200
    assert asyncio.run(live.handle(Request.parse("GET", "/streams.json")))[0] == 401
    assert TOKEN not in caplog.text and "open to anyone" not in caplog.text
    token_file.write_text(" \n")
    with pytest.raises(SettingsError, match="is empty"):
        LiveView.from_settings(lambda: {}, ingest_settings(tmp_path, **env))
    with pytest.raises(SettingsError, match="cannot read secret file"):
        LiveView.from_settings(lambda: {}, ingest_settings(tmp_path, NATRITON_LIVE_TOKEN_FILE=str(tmp_path / "nope")))


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("10.1.2.3", True), ("127.0.0.1", False),
                                              ("localhost", False)])  # fmt: skip
def test_an_open_page_is_warned_about_once_unless_only_this_machine_reaches_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="natriton_ingest.live"):
        live = LiveView.from_settings(lambda: {}, ingest_settings(tmp_path, NATRITON_METRICS_HOST=host))
    warnings = [r.getMessage() for r in caplog.records if "open to anyone" in r.getMessage()]
    assert len(warnings) == (1 if warned else 0), warnings
    assert asyncio.run(live.handle(Request.parse("GET", "/streams.json")))[0] == 200
    assert (live.max_age_s, live.max_bytes) == (7 * 86400, 10 * 1024**3)


def test_token_and_retention_settings() -> None:
    settings = load_settings(Settings, {})
    assert (settings.live_token_file, settings.recordings_max_age_days) == ("", 7.0)
    assert settings.recordings_max_bytes == 10 * 1024**3
    for bad in ({"NATRITON_RECORDINGS_MAX_AGE_DAYS": "0"}, {"NATRITON_RECORDINGS_MAX_AGE_DAYS": "-1"},
                {"NATRITON_RECORDINGS_MAX_BYTES": "0"}):  # fmt: skip
        with pytest.raises(ValueError, match="recordings_max"):
            load_settings(Settings, bad)


# ------------------------------------------------------------------ retention
HOUR = 3600.0
NOW = 1_900_000_000.0


def put(folder: Path, name: str, size: int, age_s: float, now: float = NOW) -> Path:
    """A file of ``size`` bytes last changed ``age_s`` before ``now``."""
    path = folder / name
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_s, now - age_s))
    return path


def left(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``check()`` is true (fail after ``timeout_s``)."""
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def test_the_sweep_deletes_recordings_older_than_the_age(tmp_path: Path) -> None:
    put(tmp_path, "cam-old-1.mp4", 100, 8 * 24 * HOUR)
    put(tmp_path, "cam-new-2.mp4", 100, 6 * 24 * HOUR)
    put(tmp_path, "cam-live-3.mp4.part", 100, 60)  # being recorded
    put(tmp_path, "cam-dead-4.mp4.part", 100, STALE_PART_S + 60)  # its process died mid-recording
    put(tmp_path, "cam-busy-5.mp4", 100, 30 * 24 * HOUR)  # this process's, in progress
    put(tmp_path, "notes.txt", 100, 30 * 24 * HOUR)  # not a recording
    put(tmp_path, "x.mp4.part.part", 100, 30 * 24 * HOUR)
    outside = put(tmp_path.parent, f"{tmp_path.name}-outside.mp4", 100, 30 * 24 * HOUR)
    (tmp_path / "cam-link-6.mp4").symlink_to(outside)
    swept = sweep_recordings(
        tmp_path, max_age_s=7 * 24 * HOUR, max_bytes=10**9, busy=frozenset({"cam-busy-5.mp4"}), now=NOW
    )
    assert sorted(swept.files) == ["cam-dead-4.mp4.part", "cam-old-1.mp4"] and swept.bytes == 200
    assert left(tmp_path) == {"cam-new-2.mp4", "cam-live-3.mp4.part", "cam-busy-5.mp4", "notes.txt",
                              "x.mp4.part.part", "cam-link-6.mp4"}  # fmt: skip
    assert outside.exists()
    assert sweep_recordings(tmp_path, max_age_s=7 * 24 * HOUR, max_bytes=10**9, now=NOW) == Swept(
        ["cam-busy-5.mp4"], 100
    )  # no longer in progress
    assert sweep_recordings(tmp_path / "none", max_age_s=1, max_bytes=1) == Swept([], 0)


def test_the_sweep_deletes_the_oldest_until_the_folder_is_under_the_limit(tmp_path: Path) -> None:
    for hours in (1, 2, 3, 4):
        put(tmp_path, f"cam-{hours}h.mp4", 100, hours * HOUR)
    put(tmp_path, "cam-rec.mp4.part", 50, 1)  # counts, but is never deleted
    swept = sweep_recordings(tmp_path, max_age_s=7 * 24 * HOUR, max_bytes=250, now=NOW)
    assert swept == Swept(["cam-4h.mp4", "cam-3h.mp4"], 200)
    assert left(tmp_path) == {"cam-1h.mp4", "cam-2h.mp4", "cam-rec.mp4.part"}
    swept = sweep_recordings(tmp_path, max_age_s=7 * 24 * HOUR, max_bytes=250, now=NOW)
    assert swept == Swept([], 0)  # 250 bytes: at the limit is fine
    swept = sweep_recordings(tmp_path, max_age_s=7 * 24 * HOUR, max_bytes=1, now=NOW)
    assert swept == Swept(["cam-2h.mp4", "cam-1h.mp4"], 200)
    assert left(tmp_path) == {"cam-rec.mp4.part"}


async def test_the_sweep_runs_at_start_and_every_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_module, "SWEEP_INTERVAL_S", 0.05)
    now = time.time()
    old = put(tmp_path, "cam-a.mp4", 10, 2 * HOUR, now)
    live = LiveView(lambda: {}, tmp_path, max_age_s=HOUR)
    await live.start()
    try:
        assert not old.exists() and live.swept_files == 1
        later = put(tmp_path, "cam-b.mp4", 10, 2 * HOUR, now)
        kept = put(tmp_path, "cam-c.mp4", 10, 60, now)
        await until(lambda: not later.exists())
        assert kept.exists() and live.swept_files == 2
    finally:
        await live.close()
    assert live._sweeper is None


async def test_a_recording_in_progress_is_never_swept_and_a_finished_one_triggers_a_sweep(tmp_path: Path) -> None:
    now = time.time()
    old = put(tmp_path, "cam-old.mp4", 10, 30 * 24 * HOUR, now)
    live = LiveView(lambda: {"cam-1": fake_camera()}, tmp_path, max_age_s=HOUR, max_bytes=1)
    try:
        status, _, body = await get(live, "/streams/cam-1/record?seconds=1", "POST")
        assert status == 200, body
        recording = live.recordings[json.loads(body)["file"]]
        async with asyncio.timeout(5):
            while not recording.partial.exists():
                live.on_frame("cam-1", result(), frame())
                await asyncio.sleep(0.05)
        os.utime(recording.partial, (now - 2 * STALE_PART_S, now - 2 * STALE_PART_S))  # looks abandoned
        assert (await live.sweep()).files == ["cam-old.mp4"]
        assert recording.partial.exists() and not old.exists()
        await asyncio.to_thread(recording.done.wait, 10)
        assert not recording.error, recording.error
        # the finished recording alone is over max_bytes: the sweep after it deletes it
        await until(lambda: not recording.path.exists() and not live._sweeps)
        assert live.swept_files == 2 and left(tmp_path) == set()
    finally:
        await live.close()
