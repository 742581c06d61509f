"""experiments/bench_patch.py --quick (which runs bench_decode.py --quick) prints every table with the expected
rows and columns. Timings are not judged here: speed is measured by the benchmark itself, as ratios."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables in text -> list of tables, each a list of rows of cells (header and separator dropped)."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        else:
            current = None
    return [table[2:] for table in tables]


def test_bench_patch_quick_prints_the_encoder_prefill_and_decode_tables():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_patch.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "native build:" in out.stdout
    forward, decode = _tables(out.stdout)
    assert [row[1] for row in forward] == ["unpatched (sdpa)", "patched, keep 1.0", "patched, token keep 0.5",
                                           "bound: same token counts, no importance / top-k / gathers",
                                           "unpatched (sdpa)", "patched, keep 1.0", "patched, token keep 0.5",
                                           "patched, token keep 0.3"]
    assert [row[1] for row in decode] == ["unpatched (sdpa)", "patched, KV keep 1.0", "patched, KV keep 0.5",
                                          "patched, KV keep 0.3"]
    assert decode[0][0].startswith("gpt2, batch 2")
    for row in forward + decode:
        assert len(row) == 4
        assert float(row[2]) > 0
        assert re.fullmatch(r"\d+\.\d\dx", row[3])
    assert forward[0][3] == forward[4][3] == decode[0][3] == "1.00x"  # each workload's own baseline
