"""What a fresh machine needs: the prerequisite check names what is missing, and the licences are on record."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "shared" / "dev" / "bin" / "check-prereqs"


def run_check(path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "NATRITON_MIN_FREE_GB": "0"}  # disk space is not what these tests check
    return subprocess.run(
        ["bash", str(CHECK), sys._base_executable], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def path_without(tmp_path: Path, *hidden: str) -> str:
    """A PATH with every command of the current one except ``hidden`` (as symlinks in one folder)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name not in hidden and os.access(entry.path, os.X_OK):
                target = folder / entry.name
                target.unlink(missing_ok=True)
                target.symlink_to(entry.path)
    return str(folder)


def test_this_machine_has_every_prerequisite() -> None:
    done = run_check(os.environ["PATH"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_missing_prerequisite_is_named_with_the_apt_line(tmp_path: Path) -> None:
    done = run_check(path_without(tmp_path, "make"))
    assert done.returncode == 1, done.stdout
    assert re.search(r"apt-get install -y [^\n]*\bmake\b", done.stdout), done.stdout


def test_the_licence_and_the_weights_provenance_are_recorded() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    readme = (ROOT / "model_repository" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Where the weights come from, and their licences") :]
    section = section[: section.index("\n## ", 1)]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", section, re.MULTILINE)}
    models = sorted(p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt"))
    assert sorted(rows) == models, "every model needs one provenance row (package, origin, licences)"
    for model, row in rows.items():
        assert row.count("|") == 7, f"{model}: the row must fill all six columns"
