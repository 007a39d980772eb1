"""Build every model in this repository that has an ``export.py`` (generated weights such as ``*.onnx``).

Usage: ``python model_repository/build.py [--force] [model ...]``. First the configuration variants
``<model>/configs/*.pbtxt`` are regenerated from each ``config.pbtxt`` (``variants.py``: cheap, all models, only
changed files are written; they are committed and the contract tests check they are up to date). Then each
``<model>/export.py`` is imported by path and must define ``build(force: bool) -> bool`` (True = built, False =
already up to date). Prints one line per model and exits non-zero if any build fails. No ``__pycache__`` is
written: Triton would take a stray top-level directory for a model.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent


def _load(export: Path, name: str | None = None):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name or f"_natriton_export_{export.parent.name}", export)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {export}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    """Build the selected (default: all) models; return the process exit code."""
    parser = argparse.ArgumentParser(description="Build generated model files in model_repository/.")
    parser.add_argument("--force", action="store_true", help="rebuild even when outputs are up to date")
    parser.add_argument("models", nargs="*", help="model directory names (default: every one with export.py)")
    args = parser.parse_args(argv)
    sys.dont_write_bytecode = True  # before any export.py is imported

    exports = sorted(REPO.glob("*/export.py"))
    if args.models:
        unknown = set(args.models) - {e.parent.name for e in exports}
        if unknown:
            print(f"no export.py for: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        exports = [e for e in exports if e.parent.name in args.models]

    failed = 0
    try:  # the configuration variants first: they need no dependency and every deployment reads them
        if _load(REPO / "variants.py", "_natriton_variants").main([]) != 0:
            failed += 1
    except Exception:  # report and still build the weights
        traceback.print_exc()
        print("variants: FAILED", flush=True)
        failed += 1
    for export in exports:
        name = export.parent.name
        start = time.perf_counter()
        try:
            built = bool(_load(export).build(force=args.force))
        except Exception:  # report and continue with the other models
            traceback.print_exc()
            print(f"{name}: FAILED ({time.perf_counter() - start:.1f} s)", flush=True)
            failed += 1
            continue
        status = "built" if built else "up to date"
        print(f"{name}: {status} ({time.perf_counter() - start:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
