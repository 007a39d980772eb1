"""Real photographs shipped inside installed packages (no downloads): scikit-image and matplotlib samples."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image


def encode_jpeg(pixels: npt.NDArray[np.uint8], quality: int = 92) -> bytes:
    """RGB (or grey) pixels → JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """Pixels → PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_photos() -> dict[str, bytes]:
    """Named real photos as encoded bytes: coffee, chelsea (a cat), astronaut, grace_hopper when available."""
    from skimage import data

    photos = {
        "coffee.jpg": encode_jpeg(data.coffee()),  # type: ignore[no-untyped-call]
        "chelsea.png": encode_png(data.chelsea()),  # type: ignore[no-untyped-call]
        "astronaut.jpg": encode_jpeg(data.astronaut()),  # type: ignore[no-untyped-call]
    }
    try:
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.exists():
            photos["grace_hopper.jpg"] = hopper.read_bytes()
    except ImportError:
        pass
    return photos


def main(argv: list[str] | None = None) -> int:
    """``python -m natriton_dev.images DIR``: write the sample photos into DIR (for trying the protocol)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m natriton_dev.images", description=main.__doc__)
    parser.add_argument("directory", type=Path, help="where to write coffee.jpg, chelsea.png, astronaut.jpg, ...")
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, data in sample_photos().items():
        (args.directory / name).write_bytes(data)
        print(args.directory / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
