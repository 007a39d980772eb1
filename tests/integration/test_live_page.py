"""The live page in a real browser: a real clip (Megamind.avi) is added as a camera, ingest's page (found through the
camera's status, as ``natriton stream ls`` shows it) is loaded in headless Chromium (Debian's, driven by
Playwright), and the screenshot must show the box colour exactly where the detector found the face. Also: a
recording through ``natriton stream record`` is a playable mp4 of the annotated frames, paths that try to leave
their folder get nothing, and ``make demo-video``'s module runs with ``--seconds``. With an access token
(``NATRITON_LIVE_TOKEN_FILE``), the page opened as ``/streams?token=...`` works and nothing answers without it."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from PIL import Image
from playwright.async_api import Route, async_playwright

from natriton.messages import StreamMode, StreamSource
from natriton.metrics import MetricsServer, registry_for
from natriton.runtime import ServiceRuntime
from natriton.settings import CommonSettings, load_settings
from natriton.streams import open_registry
from natriton_dev.media import sample_clip
from natriton_dev.stack import LocalStack
from natriton_ingest.live import BOX_COLOUR, LiveView
from natriton_ingest.settings import Settings
from tests.unit.test_live_view import fake_camera, frame, result

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), "")
NATRITON = Path(sys.executable).parent / "natriton"
CLIP_SIZE = (720, 528)


def box_coloured(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Pixels close to :data:`BOX_COLOUR` (magenta) after JPEG and scaling."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    assert BOX_COLOUR == (255, 0, 255)
    return (r > 170) & (g < 100) & (b > 170)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def camera(stack: LocalStack) -> AsyncIterator[tuple[str, str]]:
    """A camera playing Megamind.avi over and over, and its live page's URL (from the camera's status)."""
    nc = NATS()
    await nc.connect(stack.nats_url)
    registry = await open_registry(nc)
    camera = f"live-{uuid.uuid4().hex[:6]}"
    clip = sample_clip("Megamind.avi")
    await registry.put_source(StreamSource(camera=camera, url=str(clip), mode=StreamMode.RELIABLE, loop=True))
    try:
        page = ""
        async with asyncio.timeout(30):
            while not page:
                status = await registry.get_status(camera)
                page = status.page if status is not None else ""
                await asyncio.sleep(0.2)
        yield camera, page
    finally:
        await registry.remove_source(camera)
        await nc.close()


def http_request(base: str, method: str, path: str) -> tuple[int, bytes]:
    """One request with the path sent exactly as given (no normalisation of ``..``)."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def test_the_camera_status_names_its_owners_page(stack: LocalStack, camera: tuple[str, str]) -> None:
    _, page = camera
    assert page == f"{stack.service('ingest').metrics_url}/streams"


async def test_the_live_page_shows_boxes_where_the_faces_are(
    stack: LocalStack, camera: tuple[str, str], tmp_path: Path
) -> None:
    camera_id, page_url = camera
    assert CHROMIUM, "Chromium is missing: make browser (apt-get install chromium)"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(page_url, wait_until="domcontentloaded")
            card = page.locator(f'section[data-camera="{camera_id}"]')
            # a frame with faces is on screen, and the numbers are flowing
            await page.wait_for_function(
                """(camera) => {
                    const shown = window.natritonShown[camera];
                    const card = document.querySelector(`section[data-camera="${camera}"]`);
                    const fps = card && Number(card.querySelector("dd.fps").dataset.value || 0);
                    return shown && shown.objects.length > 0 && fps > 0;
                }""",
                arg=camera_id,
                timeout=90_000,
            )
            assert await card.locator(".camera").inner_text() == camera_id
            assert await card.locator(".state").inner_text() == "live"
            assert float(await card.locator("dd.fps").get_attribute("data-value") or 0) > 0
            assert float(await card.locator("dd.fps").inner_text()) > 0
            # freeze the page (the next poll never gets its answer, so no new image), then let the image in flight
            # (if any) arrive
            held: list[Route] = []
            await page.route("**/streams.json*", lambda route: held.append(route))
            shown: dict[str, Any] = {}
            img = card.locator("img")
            shot_path = tmp_path / "live-page.png"
            rect = None
            for _ in range(5):
                await page.wait_for_function(
                    """(camera) => {
                        const img = document.querySelector(`section[data-camera="${camera}"] img`);
                        const shown = window.natritonShown[camera];
                        return img.complete && img.naturalWidth > 0 && shown
                            && img.dataset.frame === String(shown.number);
                    }""",
                    arg=camera_id,
                    timeout=10_000,
                )
                await asyncio.sleep(0.7)  # a poll answered before the route may still start one more image
                shown = await page.evaluate("(camera) => window.natritonShown[camera]", camera_id)
                if shown["objects"]:
                    await img.scroll_into_view_if_needed()
                    rect = await img.bounding_box()
                    await page.screenshot(path=str(shot_path))
                    after = await page.evaluate("(camera) => window.natritonShown[camera]", camera_id)
                    if after["number"] == shown["number"]:  # the screenshot holds the frame whose boxes we check
                        break
                await page.unroute("**/streams.json*")  # no face, or a newer frame came in: let one more come
                for route in held:
                    await route.continue_()
                held.clear()
                await asyncio.sleep(1.0)
                await page.route("**/streams.json*", lambda route: held.append(route))
            print(f"screenshot: {shot_path}")

            # the "no cameras" state, with /streams.json answering an empty list
            empty = await browser.new_page()
            document = {"owner": "x", "updated_ms": 0, "poll_ms": 500, "cameras": []}
            await empty.route(
                "**/streams.json*",
                lambda route: route.fulfill(content_type="application/json", body=json.dumps(document)),
            )
            await empty.goto(page_url, wait_until="domcontentloaded")
            await empty.wait_for_selector("#empty:not([hidden])", timeout=10_000)
            assert "No cameras" in await empty.locator("#empty").inner_text()
        finally:
            await browser.close()

    assert shown["objects"], shown
    assert (shown["width"], shown["height"]) == CLIP_SIZE
    assert rect is not None and rect["width"] > 300
    screenshot = np.asarray(Image.open(shot_path).convert("RGB"))
    sx, sy = rect["width"] / shown["width"], rect["height"] / shown["height"]
    assert abs(sx - sy) < 0.02  # the image is shown undistorted
    for obj in shown["objects"]:
        x1, y1, x2, y2 = obj["box"]
        left, top = rect["x"] + max(0.0, x1) * sx, rect["y"] + max(0.0, y1) * sy
        right = rect["x"] + min(shown["width"] - 1.0, x2) * sx
        bottom = rect["y"] + min(shown["height"] - 1.0, y2) * sy
        region = screenshot[int(top) - 4 : int(bottom) + 5, int(left) - 4 : int(right) + 5]
        assert box_coloured(region).sum() > 50, (obj, rect)
        # the box's left edge runs along the face's left side: nearly every row there has the colour
        inner_rows = slice(int(top + 0.2 * (bottom - top)), int(bottom - 0.2 * (bottom - top)))
        edge = screenshot[inner_rows, max(0, int(left) - 3) : int(left) + 6]
        assert box_coloured(edge).any(axis=1).mean() > 0.8, (obj, rect)
        # and the middle of the face is not painted over
        cx, cy = int((left + right) / 2), int((top + bottom) / 2)
        assert not box_coloured(screenshot[cy - 3 : cy + 4, cx - 3 : cx + 4]).any()
    # the box colour appears only inside the image
    outside = screenshot.copy()
    outside[
        int(rect["y"]) : int(rect["y"] + rect["height"]) + 1, int(rect["x"]) : int(rect["x"] + rect["width"]) + 1
    ] = 0
    assert box_coloured(outside).sum() < 20


async def test_a_recording_is_a_playable_mp4_of_annotated_frames(
    stack: LocalStack, camera: tuple[str, str], tmp_path: Path
) -> None:
    camera_id, page_url = camera
    base = page_url.removesuffix("/streams")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATRITON_")}
    out = tmp_path / "clip.mp4"
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [str(NATRITON), "stream", "record", camera_id, "--seconds", "4", "--out", str(out), "--json",
         "--nats-url", stack.nats_url],
        env={**env, "NATRITON_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] and answer["camera"] == camera_id and answer["out"] == str(out)
    assert answer["url"] == f"{base}/recordings/{answer['file']}" and time.monotonic() - started >= 4
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == CLIP_SIZE
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) >= 10, len(frames)
    assert all(f.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3) for f in frames)
    assert sum(bool(box_coloured(f).sum() > 200) for f in frames) >= 0.8 * len(frames)  # the boxes are drawn
    # the same file is listed and downloadable; a second recording of the camera may start now
    status, body = await asyncio.to_thread(http_request, base, "GET", "/recordings")
    assert status == 200 and answer["file"] in [r["file"] for r in json.loads(body)["recordings"]]
    status, body = await asyncio.to_thread(http_request, base, "GET", f"/recordings/{answer['file']}")
    assert status == 200 and body == out.read_bytes()
    status, body = await asyncio.to_thread(http_request, base, "POST", f"/streams/{camera_id}/record?seconds=1")
    assert status == 200, body
    status, body = await asyncio.to_thread(http_request, base, "POST", f"/streams/{camera_id}/record?seconds=1")
    assert status == 409, body
    for bad in ("0", "601", "ten"):
        status, _ = await asyncio.to_thread(http_request, base, "POST", f"/streams/{camera_id}/record?seconds={bad}")
        assert status == 400


async def test_paths_that_leave_their_folder_get_nothing(camera: tuple[str, str]) -> None:
    camera_id, page_url = camera
    base = page_url.removesuffix("/streams")
    deadline, status, body = time.monotonic() + 30, 0, b""
    while time.monotonic() < deadline:  # until the camera has a frame
        status, body = await asyncio.to_thread(http_request, base, "GET", f"/streams/{camera_id}.jpg")
        if status == 200:
            break
        await asyncio.sleep(0.2)
    assert status == 200 and Image.open(io.BytesIO(body)).size == CLIP_SIZE
    for path in (
        "/recordings/../etc/passwd",
        "/recordings/..%2f..%2f..%2fetc%2fpasswd",
        "/recordings/%2e%2e/%2e%2e/etc/passwd",
        "/recordings/....//etc/passwd",
        "/streams/..%2f.jpg",
        "/streams/../../../../etc/passwd.jpg",
        "/streams/%2e%2e%2f%2e%2e%2fetc%2fpasswd.jpg",
        f"/streams/{camera_id}%00.jpg",
        "/streams/no-such-camera.jpg",
        "/recordings/no-such.mp4",
    ):
        status, body = await asyncio.to_thread(http_request, base, "GET", path)
        assert status in (400, 404), (path, status)
        assert b"root:" not in body
    for builtin in ("/healthz", "/readyz"):
        assert (await asyncio.to_thread(http_request, base, "GET", builtin))[0] == 200


@pytest.mark.timeout(240)
async def test_demo_video_runs_for_a_few_seconds(tmp_path: Path) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "natriton_dev.demo_video", "--seconds", "15", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Live page:  http://127.0.0.1:" in done.stdout and "/streams" in done.stdout
    summary = done.stdout.split("== summary", 1)[1]
    lines = {line.split()[0]: line for line in summary.splitlines() if line.strip()}
    megamind, street = lines["megamind"], lines["street"]
    # real-time camera: faces; reliable camera: every frame of vtest.avi at its 10 fps, less start-up
    assert int(megamind.split()[1]) >= 1 and int(megamind.split(" with faces")[0].rsplit(" ", 1)[1]) >= 1, megamind
    assert int(street.split()[1]) >= 30, street
    # Megamind's sound goes through the speech model as the camera's live audio stream: the trailer talks
    assert "speech segments" in megamind and int(megamind.split("its sound: ")[1].split()[0]) >= 1, megamind


async def test_with_a_token_the_page_works_from_its_own_url_and_nothing_answers_without_it(tmp_path: Path) -> None:
    """In-process ingest page (fake camera, synthetic frames) behind the real HTTP server, token from a file."""
    assert CHROMIUM, "Chromium is missing: make browser (apt-get install chromium)"
    token = "Zm9v+YmFy/ab=="  # needs escaping in a URL
    (tmp_path / "token").write_text(f"{token}\n")
    settings = load_settings(
        Settings,
        {"NATRITON_LIVE_TOKEN_FILE": str(tmp_path / "token"), "NATRITON_RECORDINGS_DIR": str(tmp_path / "rec")},
    )
    live = LiveView.from_settings(lambda: {"cam-1": fake_camera()}, settings, owner="ingest-t")
    runtime = ServiceRuntime("ingest", "1.0.0", CommonSettings(instance_id="t"))
    server = MetricsServer(registry_for(runtime), lambda: "", "127.0.0.1", 0, routes=live.routes())
    await server.start()
    base = f"http://127.0.0.1:{server.port}"

    async def feed() -> None:
        for number in range(10_000):
            live.on_frame("cam-1", result(number=number), frame(number % 200))
            await asyncio.sleep(0.1)

    feeder = asyncio.create_task(feed())
    try:
        for path in ("/streams", "/streams.json", "/streams/cam-1.jpg", "/recordings", "/streams.json?token=wrong"):
            assert await asyncio.to_thread(http_request, base, "GET", path) == (401, b"unauthorized\n"), path
        assert (await asyncio.to_thread(http_request, base, "POST", "/streams/cam-1/record?seconds=1"))[0] == 401
        assert (await asyncio.to_thread(http_request, base, "GET", "/healthz"))[0] == 200
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--disable-gpu", "--disable-dev-shm-usage"]
            )
            try:
                page = await browser.new_page()
                asked: list[str] = []
                page.on("request", lambda request: asked.append(request.url))
                await page.goto(f"{base}/streams?token={urllib.parse.quote(token, safe='')}")
                await page.wait_for_function(
                    """() => {
                        const img = document.querySelector('section[data-camera="cam-1"] img');
                        const shown = window.natritonShown["cam-1"];
                        return img && img.complete && img.naturalWidth > 0 && shown && shown.objects.length > 0;
                    }""",
                    timeout=15_000,
                )
                assert "updated" in await page.locator("#conn").inner_text()
                card = page.locator('section[data-camera="cam-1"]')
                await card.locator("button").click()
                await page.wait_for_function(
                    """() => document.querySelector('section[data-camera="cam-1"] .note').textContent
                        .startsWith("recording cam-1-")""",
                    timeout=10_000,
                )
            finally:
                await browser.close()
        assert [r.camera for r in live.recordings.values()] == ["cam-1"]  # the POST carried the token
        ours = [url for url in asked if url.startswith(base)]
        kinds = {urllib.parse.urlsplit(url).path.rsplit(".", 1)[-1] for url in ours}
        record = f"{base}/streams/cam-1/record?seconds=10&token={urllib.parse.quote(token, safe='')}"
        assert {"json", "jpg"} <= kinds and record in ours, ours
        assert all(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"] == [token] for url in ours), ours
    finally:
        feeder.cancel()
        await server.close()
        await live.close()
