"""Task registry: the nine GLUE tasks with their official metrics (the LM corpora live in spatten.data).

A GLUE task knows its files, how to pull sentences and labels out of them, and its metrics. MNLI and QQP
are registered although their files are not in the shared data: with the files in place they just work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from spatten.data import LM_CORPORA, LmCorpus, lm_corpus  # noqa: F401  (re-exported: the eval registry)
from spatten.eval import metrics
from spatten.eval.data import DataNotFoundError, Examples, column_index, data_dir, read_tsv_rows, require_file


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    columns: header names of (text_a, text_b or None, label); for header-less files, column indices.
    label_names: the string labels in class-index order (None: labels are already ints / floats).
    metrics: metric names from `spatten.eval.metrics.METRICS`; the first is the task's headline metric.
    """

    name: str
    folder: str
    columns: tuple
    metrics: tuple[str, ...]
    num_labels: int  # 1 = regression
    label_names: tuple[str, ...] | None = None
    has_header: bool = True
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train.tsv", "dev": "dev.tsv"})

    @property
    def is_pair(self) -> bool:
        return self.columns[1] is not None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def headline_metric(self) -> str:
        return self.metrics[0]

    def path(self, split: str, root: str | os.PathLike | None = None) -> Path:
        if split not in self.splits:
            raise ValueError(f"task {self.name} has no split {split!r}; known: {sorted(self.splits)}")
        return data_dir(root) / "glue" / self.folder / self.splits[split]

    def read(self, split: str = "dev", root: str | os.PathLike | None = None) -> Examples:
        """Read a labelled split. A missing file raises DataNotFoundError naming the path and the task."""
        try:
            path = self.path(split, root)
        except DataNotFoundError as err:
            raise DataNotFoundError(f"GLUE task {self.name}: {err}") from None
        require_file(path, f"GLUE task {self.name} ({split})")
        rows = read_tsv_rows(path)
        if self.has_header:
            header, rows = rows[0], rows[1:]
            idx = [None if c is None else column_index(header, c, path) for c in self.columns]
        else:
            idx = list(self.columns)
        width = max(i for i in idx if i is not None) + 1
        text_a, text_b, labels = [], [] if self.is_pair else None, []
        for lineno, row in enumerate(rows, start=2 if self.has_header else 1):
            if len(row) < width:
                raise ValueError(f"{path}:{lineno}: expected at least {width} tab-separated fields, got {len(row)}")
            text_a.append(row[idx[0]].strip())
            if text_b is not None:
                text_b.append(row[idx[1]].strip())
            labels.append(self._parse_label(row[idx[2]].strip(), path, lineno))
        if not text_a:
            raise ValueError(f"{path}: no examples")
        return Examples(self.name, split, text_a, text_b, labels)

    def _parse_label(self, text: str, path: Path, lineno: int):
        try:
            if self.is_regression:
                return float(text)
            if self.label_names is not None:
                return self.label_names.index(text)
            value = int(text)
        except ValueError:
            expected = "a float score" if self.is_regression else (list(self.label_names or []) or "0/1")
            raise ValueError(f"{path}:{lineno}: label {text!r} is not {expected}") from None
        if not 0 <= value < self.num_labels:
            raise ValueError(f"{path}:{lineno}: label {value} outside [0, {self.num_labels})")
        return value

    def score(self, predictions, labels) -> dict[str, float]:
        """Every metric of the task: {name: value}."""
        return {m: metrics.METRICS[m](predictions, labels) for m in self.metrics}


_NLI = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", (3, None, 1), ("matthews", "accuracy"), 2, has_header=False),
    GlueTask("sst-2", "SST-2", ("sentence", None, "label"), ("accuracy",), 2),
    GlueTask("mrpc", "MRPC", ("#1 String", "#2 String", "Quality"), ("f1", "accuracy"), 2),
    GlueTask("sts-b", "STS-B", ("sentence1", "sentence2", "score"), ("spearman", "pearson"), 1),
    GlueTask("qqp", "QQP", ("question1", "question2", "is_duplicate"), ("f1", "accuracy"), 2),
    GlueTask("mnli", "MNLI", ("sentence1", "sentence2", "gold_label"), ("accuracy",), 3,
             label_names=("contradiction", "entailment", "neutral"),
             splits={"train": "train.tsv", "dev": "dev_matched.tsv"}),
    GlueTask("mnli-mm", "MNLI", ("sentence1", "sentence2", "gold_label"), ("accuracy",), 3,
             label_names=("contradiction", "entailment", "neutral"),
             splits={"train": "train.tsv", "dev": "dev_mismatched.tsv"}),
    GlueTask("qnli", "QNLI", ("question", "sentence", "label"), ("accuracy",), 2, label_names=_NLI),
    GlueTask("rte", "RTE", ("sentence1", "sentence2", "label"), ("accuracy",), 2, label_names=_NLI),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2", "label"), ("accuracy",), 2),
)}
_ALIASES = {"sst2": "sst-2", "stsb": "sts-b", "sts": "sts-b", "mnli-m": "mnli", "mnli_mismatched": "mnli-mm"}


def glue_task(name: str) -> GlueTask:
    """Look a task up by name (case-insensitive; 'sst2' and 'sst-2' both work)."""
    key = name.lower().replace("_", "-")
    key = _ALIASES.get(key.replace("-", ""), _ALIASES.get(key, key))
    if key not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {name!r}; known: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


