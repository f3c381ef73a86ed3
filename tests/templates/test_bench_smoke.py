"""bench/render.py runs and prints both figures from the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_render_benchmark_prints_both_paths_and_the_speed_up() -> None:
    options = ["--readers", "200", "--naive-readers", "5", "--rounds", "1", "--dkim-readers", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "bench.render", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "render():" in result.stdout
    assert "naive path:" in result.stdout
    assert "speed-up:" in result.stdout
