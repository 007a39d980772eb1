"""The claim-check benchmark (loadtests/claim_check) in a tiny configuration, so that it cannot rot.

Starts real nats-server and redis-server processes and the two peers, runs one payload through three stores for
a fraction of a second each, then the delete/expiry step with 3 frames; checks the result files' shape, not the
numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.claim_check import bench

pytestmark = pytest.mark.integration


def test_tiny_run_writes_json_markdown_and_png(tmp_path: Path) -> None:
    from natriton_dev.servers import ServerNotFoundError, find_binary

    try:
        find_binary("nats-server", "")
        find_binary("redis-server", "")
    except ServerNotFoundError as exc:
        pytest.skip(str(exc))
    argv = [
        "--payloads", "tensor", "--variants", "inline,redis,shm-ring,shm-file", "--inflight", "2",
        "--slices", "1", "--duration", "0.2", "--warmup", "0.1", "--frame", "0",
        "--delete-n", "3", "--expiry-ttl-s", "1", "--expiry-settle-s", "0.1", "--jpeg-reps", "1",
        "--quiet", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    result = bench.main(argv)

    data = json.loads((tmp_path / "claim_check.json").read_text())
    assert data["command"].startswith("python -m loadtests.claim_check --payloads tensor")
    assert data["media"]["bytes"]["tensor"] == 153_600
    assert data["media"]["bytes"]["raw"] == 720 * 528 * 3
    rows = {r["variant"]: r for r in data["rows"]}
    assert set(rows) == {"inline", "redis", "shm-ring", "shm-file"}
    for row in rows.values():
        assert row["samples"] > 0 and row["fps"] > 0, row
        assert row["errors"] == 0 and row["lost"] == 0, row
        assert row["p50_ms"] <= row["p99_ms"]
        assert set(row["cpu_us_per_frame"]) == {"producer", "consumer", "nats-server", "redis-server", "total"}
    deletes = {d["variant"]: d for d in data["delete_expiry"]}
    assert set(deletes) == {"redis", "shm-file"}
    assert deletes["redis"]["expiry"]["left_after"] == 0
    assert deletes["redis"]["delete"]["left_after"] == 0
    assert "expiry" not in deletes["shm-file"]
    assert data["jpeg_codec"]["encode_q90"]["cpu_us_p50"] > 0
    md = (tmp_path / "claim_check.md").read_text()
    assert "| 2 | shm-ring |" in md and "Delete vs TTL expiry" in md
    assert (tmp_path / "claim_check.png").stat().st_size > 0
    assert result["rows"] == data["rows"]
