"""What the standalone benchmarks (``python -m loadtests.<name>``) share: writing their result files and their entry
point."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_reports(
    result: dict[str, Any],
    args: argparse.Namespace,
    markdown: Callable[..., str],
    plot: Callable[[dict[str, Any], Path], None],
    *,
    json_too: bool,
) -> dict[str, Any]:
    """``<args.out_dir>/<args.name>.json`` (unless rebuilding from it), ``.md`` and ``.png`` (unless
    ``args.no_plot``); returns ``result``."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    base = args.out_dir / args.name
    if json_too:
        base.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    base.with_suffix(".md").write_text(markdown(result, png=None if args.no_plot else f"{args.name}.png"))
    if not args.no_plot:
        plot(result, base.with_suffix(".png"))
    if not args.quiet:
        print(f"wrote {base}.json/.md{'' if args.no_plot else '/.png'} ({result['elapsed_s']} s run)", flush=True)
    return result


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; SIGTERM runs the finally blocks (servers stop), Ctrl-C exits without results."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every child process was stopped, no results written")
