"""One-line progress display on stderr while a measurement runs: rate, p50/p99 so far, errors."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TextIO

from .recorder import OK, Recorder, new_histogram, percentiles_us


def format_line(
    label: str,
    elapsed_s: float,
    sent: int,
    counts: Mapping[str, int],
    rate: float,
    p50_ms: float | None,
    p99_ms: float | None,
    offered: float | None = None,
) -> str:
    """``ramp step 2/5 | 12.3 s | offered 120/s | sent 1490 ok 1480 | 118.9/s | p50 42.1 ms p99 130 ms | ...``."""
    parts = [label, f"{elapsed_s:5.1f} s"]
    if offered is not None:
        parts.append(f"offered {offered:,.0f}/s")
    done = sum(counts.values())
    parts.append(f"sent {sent:,} done {done:,}")
    parts.append(f"{rate:,.1f}/s")
    if p50_ms is not None and p99_ms is not None:
        parts.append(f"p50 {p50_ms:,.2f} ms p99 {p99_ms:,.2f} ms")
    errors = {k: v for k, v in counts.items() if k != OK and v}
    parts.append("errors " + (" ".join(f"{k}={v:,}" for k, v in sorted(errors.items())) if errors else "0"))
    return " | ".join(parts)


class Progress:
    """Rewrites one line on a terminal (``\\r``); writes a line every ``plain_interval`` seconds otherwise."""

    def __init__(
        self, stream: TextIO | None = None, interval_s: float = 0.5, plain_interval_s: float = 5.0, enabled: bool = True
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if self.tty else plain_interval_s
        self._width = 0

    def _write(self, line: str, final: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad + ("\n" if final else ""))
            self._width = 0 if final else len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, line: str) -> None:
        """A plain line (ends any progress line in place)."""
        self._write(line, final=True)

    @contextlib.asynccontextmanager
    async def track(
        self, label: str, recorder: Recorder | Sequence[Recorder] | None = None, offered: float | None = None
    ) -> AsyncIterator[None]:
        """Show progress of ``recorder`` (several are summed; none: only the elapsed time) until the block exits."""
        started = time.monotonic()
        parts = [recorder] if isinstance(recorder, Recorder) else list(recorder or [])
        state = {"t": started, "done": 0}

        def render() -> str:
            now = time.monotonic()
            if not parts:
                return f"{label} | {now - started:5.1f} s"
            counts: Counter[str] = Counter()
            for p in parts:
                counts.update(p.live_counts)
            if len(parts) == 1:
                hist = parts[0].live_ok
            else:
                hist = new_histogram()
                for p in parts:
                    hist.add(p.live_ok)
            done = sum(counts.values())
            dt = now - state["t"]
            rate = (done - state["done"]) / dt if dt > 0 else 0.0
            state["t"], state["done"] = now, done
            have = hist.get_total_count() > 0
            p50, p99 = percentiles_us(hist, (50.0, 99.0))
            return format_line(
                label,
                now - started,
                sum(p.live_sent for p in parts),
                counts,
                rate,
                p50 / 1000 if have else None,
                p99 / 1000 if have else None,
                offered,
            )

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.interval_s)
                self._write(render(), final=False)

        task = asyncio.get_running_loop().create_task(tick()) if self.enabled else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.tty and self._width:
                self._write(render(), final=True)
