"""Real video and audio for tests and demos: the sample clips from Debian's ``opencv-doc``, the voice recordings
from ``alsa-utils``, and a live HTTP stream server.

- :func:`sample_clip` returns ``Megamind.avi`` (720x528, 23.976 fps, 270 frames, faces) or ``vtest.avi`` (768x576,
  10 fps, 795 frames, pedestrians), fetched once with ``apt-get download opencv-doc`` + ``dpkg-deb -x`` into
  ``NATRITON_MEDIA_DIR`` (default: ``<venv>/media``).
- :func:`sample_sound` returns one of :data:`SOUNDS`: eight spoken words (``Front_Center.wav``: "front center", ...;
  about 1.4 s each, 48 kHz mono 16-bit) and ``Noise.wav`` (no speech), from ``/usr/share/sounds/alsa`` when
  installed, else fetched once the same way from ``alsa-utils``.
- :class:`StreamServer` serves a clip as a LIVE MPEG-TS stream over HTTP at real-time pace, looping, one encoder
  per client (PyAV only: nothing beyond the pip wheel). Tests stop (kill) it and start it again on the same port.

CLI: ``python -m natriton_dev.media fetch`` (clips and sounds) and ``python -m natriton_dev.media serve CLIP --port N``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

from natriton_dev.process import ManagedProcess, free_port, wait_until

log = logging.getLogger(__name__)

CLIPS: Final = ("Megamind.avi", "vtest.avi")
PACKAGE: Final = "opencv-doc"
VOICES: Final = (
    "Front_Center.wav",
    "Front_Left.wav",
    "Front_Right.wav",
    "Rear_Center.wav",
    "Rear_Left.wav",
    "Rear_Right.wav",
    "Side_Left.wav",
    "Side_Right.wav",
)
"""The alsa-utils recordings of a voice saying where the speaker is ("front center", ...)."""
NOISE: Final = "Noise.wav"
"""The alsa-utils recording without speech (pink-ish noise)."""
SOUNDS: Final = (*VOICES, NOISE)
SOUNDS_PACKAGE: Final = "alsa-utils"
SYSTEM_SOUNDS: Final = Path("/usr/share/sounds/alsa")
STREAM_PATH: Final = "/live.ts"


class MediaUnavailableError(RuntimeError):
    """The sample clips or sounds could not be fetched; the message says what to install or where to put them."""


def media_dir() -> Path:
    """``NATRITON_MEDIA_DIR``, else ``<venv>/media`` inside a venv, else ``~/.cache/natriton/media``."""
    configured = os.environ.get("NATRITON_MEDIA_DIR")
    if configured:
        return Path(configured)
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "media"
    return Path.home() / ".cache" / "natriton" / "media"


def sample_clip(name: str) -> Path:
    """The path of a sample clip (``Megamind.avi`` or ``vtest.avi``), fetched on first use."""
    if name not in CLIPS:
        raise ValueError(f"unknown clip {name!r} (known: {', '.join(CLIPS)})")
    directory = media_dir()
    path = directory / name
    if not path.exists():
        fetch_clips(directory)
    return path


def fetch_clips(directory: Path | None = None) -> list[Path]:
    """Fetch every sample clip into ``directory`` (default :func:`media_dir`) unless present; return their paths."""
    directory = directory or media_dir()
    hint = (
        f"install apt-get and dpkg-deb (Debian/Ubuntu) or copy {', '.join(CLIPS)} from the {PACKAGE} package "
        f"(usr/share/doc/{PACKAGE}/examples/data/) into {directory} (or set NATRITON_MEDIA_DIR)"
    )
    _fetch(directory, PACKAGE, CLIPS, hint, "about 100 MB")
    return [directory / name for name in CLIPS]


def sample_sound(name: str) -> Path:
    """The path of a sample sound (one of :data:`SOUNDS`), fetched on first use."""
    if name not in SOUNDS:
        raise ValueError(f"unknown sound {name!r} (known: {', '.join(SOUNDS)})")
    return dict(zip(SOUNDS, fetch_sounds(), strict=True))[name]


def fetch_sounds(directory: Path | None = None) -> list[Path]:
    """The paths of :data:`SOUNDS`: in ``/usr/share/sounds/alsa`` when ``alsa-utils`` is installed, else fetched
    into ``directory`` (default :func:`media_dir`) unless present there."""
    if directory is None and all((SYSTEM_SOUNDS / name).is_file() for name in SOUNDS):
        return [SYSTEM_SOUNDS / name for name in SOUNDS]
    directory = directory or media_dir()
    hint = (
        f"install apt-get and dpkg-deb (Debian/Ubuntu), or the {SOUNDS_PACKAGE} package, or copy {', '.join(SOUNDS)} "
        f"from it (usr/share/sounds/alsa/) into {directory} (or set NATRITON_MEDIA_DIR)"
    )
    _fetch(directory, SOUNDS_PACKAGE, SOUNDS, hint, "about 1 MB")
    return [directory / name for name in SOUNDS]


def _fetch(directory: Path, package: str, names: tuple[str, ...], hint: str, size: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch at a time (parallel test sessions)
        missing = [name for name in names if not (directory / name).exists()]
        if missing:
            _extract_from_deb(directory, package, missing, hint, size)


def _apt_download(workdir: Path, package: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "download", package], cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )


def _extract_from_deb(directory: Path, package: str, names: list[str], hint: str, size: str) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise MediaUnavailableError(f"apt-get/dpkg-deb not found: {hint}")
    with tempfile.TemporaryDirectory(prefix="natriton-media-") as tmp:
        workdir = Path(tmp)
        log.info("fetching %s with apt-get download (%s, once)", package, size)
        result = _apt_download(workdir, package)
        if result.returncode != 0 and os.geteuid() == 0:
            # a fresh container has no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, check=False)
            result = _apt_download(workdir, package)
        debs = sorted(workdir.glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            raise MediaUnavailableError(f"'apt-get download {package}' failed: {result.stderr.strip()[-500:]}\n{hint}")
        tree = workdir / "tree"
        extract = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(tree)], capture_output=True, text=True, timeout=600, check=False
        )
        if extract.returncode != 0:
            raise MediaUnavailableError(f"dpkg-deb -x failed: {extract.stderr.strip()[-500:]}\n{hint}")
        for name in names:
            found = sorted(tree.rglob(name))
            if not found:
                raise MediaUnavailableError(f"{name} is not in {debs[0].name}\n{hint}")
            partial = directory / f".{name}.partial"
            shutil.copyfile(found[0], partial)
            partial.replace(directory / name)
            log.info("fetched %s", directory / name)


# --------------------------------------------------------------------------------------------
# The live stream server
# --------------------------------------------------------------------------------------------
def stream_clip(clip: Path, out: io.BufferedIOBase, *, codec: str = "mpeg4") -> None:
    """Write ``clip`` to ``out`` as MPEG-TS at real-time pace, looping, until writing fails (the client left).

    Timestamps keep increasing across loops; a keyframe every second so that a decoder can start anywhere.
    """
    import av
    from av.video.frame import PictureType

    with av.open(str(clip)) as probe:
        source = probe.streams.video[0]
        rate = source.average_rate or source.guessed_rate or Fraction(25)
        width, height = source.codec_context.width, source.codec_context.height
    output = av.open(out, "w", format="mpegts", options={"flush_packets": "1"}, buffer_size=4096)
    try:
        stream = output.add_stream(codec, rate=rate)
        assert isinstance(stream, av.VideoStream), f"{codec} is not a video encoder"
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.gop_size = max(1, round(rate))
        stream.bit_rate = 2_000_000
        started = time.monotonic()
        number = 0
        while True:
            with av.open(str(clip)) as reader:
                for frame in reader.decode(video=0):
                    delay = started + float(number / rate) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    picture = frame.reformat(format="yuv420p")
                    picture.pts, picture.time_base, picture.pict_type = number, 1 / rate, PictureType.NONE
                    output.mux(stream.encode(picture))
                    number += 1
    finally:
        with contextlib.suppress(Exception):  # the client is gone: the trailer cannot be written
            output.close()


class _Handler(BaseHTTPRequestHandler):
    server: _ClipServer
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, b"ok\n", "text/plain")
            return
        if self.path != STREAM_PATH:
            self._reply(404, b"not found\n", "text/plain")
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            stream_clip(self.server.clip, self.wfile, codec=self.server.codec)
        except Exception as exc:  # the client went away (broken pipe) or the clip failed
            log.info("client %s left: %s", self.client_address, exc)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


class _ClipServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restart on the same port at once

    def __init__(self, port: int, clip: Path, codec: str) -> None:
        self.clip = clip
        self.codec = codec
        super().__init__(("127.0.0.1", port), _Handler)


def serve(clip: Path, port: int, codec: str = "mpeg4") -> None:
    """Serve ``clip`` on ``http://127.0.0.1:<port>/live.ts`` until killed (blocking)."""
    with _ClipServer(port, clip, codec) as server:
        log.info("serving %s on http://127.0.0.1:%d%s", clip, server.server_address[1], STREAM_PATH)
        server.serve_forever()


class StreamServer(ManagedProcess):
    """``python -m natriton_dev.media serve`` as a child process: a clip as a live HTTP MPEG-TS stream.

    ``start()`` waits until it answers; ``stop()`` kills it (clients see the stream end); ``restart()`` brings it
    back on the same port. A context manager, like the servers in :mod:`natriton_dev.servers`.
    """

    def __init__(self, clip: Path, workdir: Path, *, port: int = 0, codec: str = "mpeg4") -> None:
        self.clip = Path(clip).resolve()
        self.port = port or free_port()
        command = [sys.executable, "-m", "natriton_dev.media", "serve", str(self.clip), "--port", str(self.port),
                   "--codec", codec]  # fmt: skip
        super().__init__(command, Path(workdir), name=f"stream-server-{self.port}")

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"http://127.0.0.1:{self.port}{STREAM_PATH}"

    def start(self) -> None:
        """Start and wait until ``/health`` answers."""
        super().start()
        wait_until(self._ready, 15.0, what=f"{self.name} on port {self.port}")

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start()

    def _ready(self) -> bool:
        if not self.is_running:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1.0) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False


def _clip_argument(value: str) -> Path:
    return sample_clip(value) if value in CLIPS else Path(value)


def main(argv: list[str] | None = None) -> int:
    """``fetch``: the sample clips and sounds into the media folder; ``serve CLIP --port N``: a live HTTP stream of
    a clip."""
    parser = argparse.ArgumentParser(prog="python -m natriton_dev.media", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch", help=f"fetch {', '.join(CLIPS)} and the alsa sounds (apt-get download {PACKAGE} {SOUNDS_PACKAGE})"
    )
    fetch.add_argument("--dir", type=Path, default=None, help="default: NATRITON_MEDIA_DIR, else <venv>/media")
    served = commands.add_parser("serve", help=f"serve a clip on http://127.0.0.1:PORT{STREAM_PATH}, live, looping")
    served.add_argument("clip", type=_clip_argument, help=f"a video file, or one of {', '.join(CLIPS)}")
    served.add_argument("--port", type=int, required=True)
    served.add_argument("--codec", default="mpeg4", help="video encoder (mpeg4, libx264, mpeg2video)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "fetch":
        for path in [*fetch_clips(args.dir), *fetch_sounds(args.dir)]:
            print(path)
        return 0
    serve(args.clip, args.port, args.codec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
