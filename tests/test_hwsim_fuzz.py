"""Fuzz: mutated official CSVs (truncated, columns deleted, garbage numbers, huge sizes) always give a clean
TraceFormatError from spatten.hwsim.simulate and exit code 2 from the CLI, never a crash."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from spatten import hwsim
from spatten.trace import TraceFormatError

GARBAGE = ["", "nan", "inf", "-1e999", "1e999", "abc", "0x10", "12.5", "-5", "99999999999999999999", "True",
           "\x00", "'", " ", "1,2"]


def mutate(lines: list[str], rng: random.Random) -> tuple[str, str]:
    lines = list(lines)
    kind = rng.choice(["truncate", "delete_column", "garbage", "huge", "drop_header", "cut_row"])
    if kind == "truncate":
        text = "\n".join(lines)
        return kind, text[: rng.randrange(1, len(text))]
    if kind == "delete_column":
        col = rng.randrange(17)
        return kind, "\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != col) for line in lines)
    row = rng.randrange(1, len(lines) - 1)
    fields = lines[row].split(",")
    if kind == "garbage":
        fields[rng.randrange(len(fields))] = rng.choice(GARBAGE)
    elif kind == "huge":
        fields[rng.choice([3, 4, 5, 11])] = str(rng.choice([2**24 + 1, 2**40, 10**15]))
    elif kind == "drop_header":
        return kind, "\n".join(lines[1:])
    else:
        fields = fields[: rng.randrange(1, len(fields))]
    lines[row] = ",".join(fields)
    return kind, "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def base_lines(workloads_dir) -> list[str]:
    # A small slice of a real pruned workload (header + 40 rows + config line).
    lines = (workloads_dir / "summary-gpt2-small-wikitext2-per8.csv").read_text().splitlines()
    return lines[:41] + [lines[-1]]


def test_mutated_csvs_raise_clean_errors(base_lines, tmp_path):
    rng = random.Random(1234)
    errors = 0
    for i in range(120):
        kind, text = mutate(base_lines, rng)
        path = tmp_path / f"m{i}.csv"
        path.write_text(text)
        try:
            report = hwsim.simulate(path, dense_baseline=False)
        except TraceFormatError as err:
            errors += 1
            assert str(path) in str(err), (kind, str(err))
        else:  # some mutations stay valid (e.g. a garbage value that parses, a truncation at a line end)
            assert report.cycles > 0
    assert errors > 60


def test_cli_exits_2_on_mutated_input(base_lines, tmp_path):
    rng = random.Random(99)
    for i in range(12):
        kind, text = mutate(base_lines, rng)
        path = tmp_path / f"c{i}.csv"
        path.write_text(text)
        out = subprocess.run([sys.executable, "-c", "from spatten.hwsim.cli import main; main()", str(path),
                              "--no-dense"], capture_output=True, text=True, timeout=60)
        assert out.returncode in (0, 2), (kind, out.returncode, out.stderr)
        if out.returncode == 2:
            assert out.stderr.startswith("spatten-sim: error:") and str(path) in out.stderr
