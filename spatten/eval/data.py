"""Readers for the local evaluation data: GLUE TSV files and language-modelling text.

Everything is read from a data directory: an explicit argument, else the environment variable
`SPATTEN_DATA_DIR`. Nothing is downloaded. The GLUE files keep their upstream quirks (CoLA has no header,
MRPC starts with a UTF-8 BOM, texts contain unbalanced quotes), so the TSVs are split on tabs only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

DATA_DIR_ENV = "SPATTEN_DATA_DIR"


class DataNotFoundError(FileNotFoundError):
    """A data file a task needs is missing; the message names the path and the task."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory: `root` if given, else $SPATTEN_DATA_DIR."""
    if root is None:
        root = os.environ.get(DATA_DIR_ENV)
        if not root:
            raise DataNotFoundError(f"no data directory: pass one explicitly or set ${DATA_DIR_ENV}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"data directory {path} does not exist")
    return path


@dataclass(frozen=True)
class Examples:
    """Examples of one GLUE split. `text_b` is None for single-sentence tasks; labels are ints or floats."""

    task: str
    split: str
    text_a: list[str]
    text_b: list[str] | None
    labels: list

    def __len__(self) -> int:
        return len(self.text_a)

    def head(self, n: int | None) -> "Examples":
        """The first n examples (all when n is None): dev subsets stay reproducible."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"a subset needs at least one example, got n={n}")
        return Examples(self.task, self.split, self.text_a[:n], None if self.text_b is None else self.text_b[:n],
                        self.labels[:n])


def read_tsv_rows(path: Path) -> list[list[str]]:
    """Split a GLUE TSV on tabs only (no quote handling, as in GLUE's own reader); drops a leading BOM."""
    text = path.read_text(encoding="utf-8-sig")
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def read_lm_text(path: Path, max_chars: int | None = None) -> str:
    """A language-modelling corpus as one string (WikiText / PTB keep their line layout)."""
    with path.open(encoding="utf-8") as f:
        return f.read() if max_chars is None else f.read(max_chars)


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataNotFoundError(f"{what}: file {path} not found (set ${DATA_DIR_ENV} or --data-dir to the "
                                "directory that holds it)")
    return path


def column_index(header: Sequence[str], name: str, path: Path) -> int:
    try:
        return list(header).index(name)
    except ValueError:
        raise ValueError(f"{path}: header has no column {name!r} (columns: {list(header)})") from None
