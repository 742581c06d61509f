"""The local data directory and the language-modelling corpora in it (shared by models, training and eval).

Everything is read from a data directory: an explicit argument, else the environment variable
`SPATTEN_DATA_DIR`. Nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def read_lm_text(path: Path, max_chars: int | None = None) -> str:
    """A language-modelling corpus as one string (WikiText / PTB keep their line layout)."""
    with path.open(encoding="utf-8") as f:
        return f.read() if max_chars is None else f.read(max_chars)


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataNotFoundError(f"{what}: file {path} not found (set ${DATA_DIR_ENV} or --data-dir to the "
                                "directory that holds it)")
    return path


@dataclass(frozen=True)
class LmCorpus:
    """A language-modelling corpus file; `prepare` turns its raw text into what a tokenizer should see."""

    name: str
    relpath: str
    prepare: Callable[[str], str] = lambda text: text

    def path(self, root: str | os.PathLike | None = None) -> Path:
        return data_dir(root) / self.relpath

    def read(self, root: str | os.PathLike | None = None, max_chars: int | None = None) -> str:
        try:
            path = self.path(root)
        except DataNotFoundError as err:
            raise DataNotFoundError(f"LM corpus {self.name}: {err}") from None
        return self.prepare(read_lm_text(require_file(path, f"LM corpus {self.name}"), max_chars))


def _strip_blank_lines(text: str) -> str:
    # WikiText writes blank lines as a single space; they carry no tokens worth scoring.
    return "\n".join(line.strip() for line in text.splitlines() if line.strip()) + "\n"


LM_CORPORA: dict[str, LmCorpus] = {c.name: c for c in (
    LmCorpus("wikitext-2", "wikitext-2-raw/wiki.test.raw", _strip_blank_lines),
    LmCorpus("wikitext-2-tokens", "wikitext-2/wiki.test.tokens", _strip_blank_lines),
    LmCorpus("wikitext-2-valid", "wikitext-2/wiki.valid.tokens", _strip_blank_lines),
    LmCorpus("wikitext-103", "wikitext-103/wiki.test.tokens", _strip_blank_lines),
    LmCorpus("wikitext-103-valid", "wikitext-103/wiki.valid.tokens", _strip_blank_lines),
    LmCorpus("ptb", "ptb/ptb.test.txt", _strip_blank_lines),
    LmCorpus("ptb-valid", "ptb/ptb.valid.txt", _strip_blank_lines),
)}


def lm_corpus(name: str) -> LmCorpus:
    key = name.lower()
    if key not in LM_CORPORA:
        raise KeyError(f"unknown LM corpus {name!r}; known: {sorted(LM_CORPORA)}")
    return LM_CORPORA[key]
