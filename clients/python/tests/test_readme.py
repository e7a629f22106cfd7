"""The README's quick start runs as written against a live coord."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Coord

README = Path(__file__).resolve().parents[1] / "README.md"


def run_block(name: str, coords: list[Coord]) -> str:
    block = re.search(rf"<!-- ci:{name} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, f"the {name} block"
    env = dict(os.environ, COORD_ADDR=",".join(c.addr for c in coords),
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    out = subprocess.run([sys.executable, "-c", block.group(1)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_readme_quick_start_runs_as_written(coords: list[Coord]) -> None:
    out = run_block("quickstart", coords)
    assert "allowed: [True, True, False]" in out, out
    assert "got b'order 1' at offset 1" in out, out


def test_the_readme_asyncio_example_runs_as_written(coords: list[Coord]) -> None:
    out = run_block("asyncio", coords)
    assert "async token True" in out and "async got b'hello'" in out, out
