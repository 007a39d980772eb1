"""docs/protocol.md's examples run as written against the real mesh (Python), or at least parse (Go)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tree_sitter_go
from tree_sitter import Language, Parser

from natriton_dev.stack import LocalStack

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(PROTOCOL.read_text(encoding="utf-8")) if lang == language]


def run_example(source: str, tmp_path: Path, *args: str) -> str:
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_doc_has_the_examples_this_test_runs() -> None:
    assert len(code_blocks("python")) == 2
    assert len(code_blocks("go")) == 1


@pytest.mark.integration
def test_python_request_reply_example(stack: LocalStack, photos: dict[str, bytes], tmp_path: Path) -> None:
    photo = tmp_path / "coffee.jpg"
    photo.write_bytes(photos["coffee.jpg"])
    out = run_example(code_blocks("python")[0], tmp_path, stack.nats_url, str(photo))
    first = out.splitlines()[0].split()
    assert first[0] == "espresso" and float(first[1]) > 0.9, out


@pytest.mark.integration
def test_python_fire_and_forget_example(stack: LocalStack, tmp_path: Path) -> None:
    out = run_example(code_blocks("python")[1], tmp_path, stack.nats_url)
    assert out.split() == ["s-1", "embedding"], out


def test_go_example_parses() -> None:
    parser = Parser(Language(tree_sitter_go.language()))
    tree = parser.parse(code_blocks("go")[0].encode())
    assert not tree.root_node.has_error, tree.root_node


def test_go_parser_catches_a_broken_example() -> None:
    """The check above can fail: a syntax error is seen."""
    parser = Parser(Language(tree_sitter_go.language()))
    broken = code_blocks("go")[0].replace("func main() {", "func main() {{", 1)
    assert parser.parse(broken.encode()).root_node.has_error


README = PROTOCOL.parents[1] / "README.md"


@pytest.mark.integration
def test_readme_client_example(stack: LocalStack, photos: dict[str, bytes], tmp_path: Path) -> None:
    """The README's Python client example, pointed at the test stack, prints what its comment says."""
    blocks = [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == "python"]
    assert len(blocks) == 1
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "coffee.jpg").write_bytes(photos["coffee.jpg"])
    source = blocks[0].replace("nats://127.0.0.1:4222", stack.nats_url)
    assert run_example(source, tmp_path).strip() == "espresso"
