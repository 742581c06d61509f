"""Readers for the local evaluation data: GLUE TSV files and language-modelling text.

The data directory and the LM corpora live in the low-level `spatten.data` (models and training read them
too); this module keeps the GLUE side. The GLUE files keep their upstream quirks (CoLA has no header,
MRPC starts with a UTF-8 BOM, texts contain unbalanced quotes), so the TSVs are split on tabs only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from spatten.data import DATA_DIR_ENV, DataNotFoundError, data_dir, read_lm_text, require_file  # noqa: F401


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


def column_index(header: Sequence[str], name: str, path: Path) -> int:
    try:
        return list(header).index(name)
    except ValueError:
        raise ValueError(f"{path}: header has no column {name!r} (columns: {list(header)})") from None
