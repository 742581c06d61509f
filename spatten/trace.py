"""The trace: what a (pruned) model did, one row per (sequence, stage, step, layer, head).

It is the only contract between the model side (`spatten.patch`) and the simulator (`spatten.hwsim`).
Two file formats:

- native (`Trace.save` / `Trace.load`), versioned:
      # spatten-trace v2
      # meta {"family": "gpt2", "layers": 12, ...}        <- one line of JSON
      stage,step,layer,head,...,sequence                 <- header, then one CSV row per head
  v2 added the `sequence` column (which sequence of a batch a row belongs to); v1 files (no such column, every
  row is sequence 0) are still read.
- the official SpAtten workload CSV (`Trace.from_official_csv` / `Trace.to_official_csv`), lossless for the
  columns that format has (it only describes generation, one query row per head, kept heads only).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from spatten.atomic import atomic_write_text

FORMAT_VERSION = 2
_MAGIC = "# spatten-trace v"

STAGES = ("summarize", "generate")
TOPK_KINDS = ("none", "token", "head")


@dataclass(frozen=True)
class Column:
    name: str
    kind: type  # int, float, bool or str
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("stage", str, "summarize (whole prompt / BERT: Q, K, V are matrices) or generate (one new token)"),
    Column("step", int, "decode step (0 for summarize)"),
    Column("layer", int, "transformer layer"),
    Column("head", int, "attention head (query head for GQA models)"),
    Column("head_kept", bool, "False when cascade head pruning removed this head: it does no work"),
    Column("d_head", int, "head dimension"),
    Column("query_rows", int, "query rows computed for this head (1 in generation)"),
    Column("kv_len", int, "KV length before any pruning (tokens seen so far)"),
    Column("keys_fetched", int, "K vectors fetched after cascade token pruning"),
    Column("values_fetched", int, "V vectors fetched after local value pruning"),
    Column("k_msb_bits", int, "bits of K fetched first (-1 = unquantized)"),
    Column("k_lsb_bits", int, "LSB bits of K fetched on refetch (-1 = none)"),
    Column("q_bits", int, "query bits (-1 = unquantized)"),
    Column("v_bits", int, "bits of V (-1 = unquantized)"),
    Column("threshold", float, "max attention probability below which K LSBs are fetched (-1 = off)"),
    Column("lsb_refetch_rows", int, "query rows whose max probability fell below the threshold"),
    Column("accumulate_importance", bool, "this head adds to the cascade token importance"),
    Column("rescale_importance", bool, "the accumulated importance is rescaled after this head"),
    Column("topk_kind", str, "cascade top-k run after this head: none, token or head"),
    Column("topk_k", int, "entries kept by that top-k (-1 when none)"),
    Column("sequence", int, "which sequence of a batch (v2; sequences are independent, 0 when there is one)"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
# The v1 columns: all but `sequence` (which defaults to 0 wherever it is absent).
V1_COLUMN_NAMES: tuple[str, ...] = COLUMN_NAMES[:-1]
_COLUMN_BY_NAME = {c.name: c for c in COLUMNS}

# Official workload CSV columns, in file order, and the trace column each one maps to.
OFFICIAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("iteration_id", "step"),
    ("layer_id", "layer"),
    ("head_id", "head"),
    ("embedding_length_D", "d_head"),
    ("sentence_length_L", "kv_len"),
    ("key_fetch_num", "keys_fetched"),
    ("quant_key_bit", "k_msb_bits"),
    ("quant_query_bit", "q_bits"),
    ("auto_requant_thres", "threshold"),
    ("if_requant", "lsb_refetch_rows"),
    ("auto_requant_incre", "k_lsb_bits"),
    ("value_fetch_num", "values_fetched"),
    ("quant_value_bit", "v_bits"),
    ("if_accumulate_importance", "accumulate_importance"),
    ("if_rescale_previous_importance", "rescale_importance"),
    ("if_topk", "topk_kind"),
    ("topk", "topk_k"),
)
_OFFICIAL_NAME_OF = {trace_name: name for name, trace_name in OFFICIAL_COLUMNS}
_MAX_DIM = 1 << 24  # larger sizes are certainly a corrupt file, not a model


class TraceFormatError(ValueError):
    """A trace file or trace rows are malformed; the message names the file, line and field."""


# One grammar for both readers (this module and hwsim/src/trace.cpp; docs/hwsim.md "Trace grammar"): lines end at
# "\n" and every "\r" is dropped, fields are split at "," (no quoting) and trimmed of spaces and tabs, numbers
# are ASCII decimals (no inf/nan, hex, "_" separators or non-ASCII digits), JSON metadata is strict.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_INT = 9e15  # larger integers are a corrupt file (and not exact in a double)
_MAX_D_HEAD = 4096
_MAX_TRANSACTIONS = 4e9  # the simulator's work bound (hwsim/src/trace.h kMaxTransactions)


def _trim(text: str) -> str:
    return text.strip(" \t")


def _lines(text: str) -> list[str]:
    lines = text.replace("\r", "").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _fields(line: str) -> list[str]:
    return line.split(",")


def _blank(line: str) -> bool:
    return _trim(line) == ""


def _parse_bool(text: str) -> bool:
    if text in ("True", "true", "1"):
        return True
    if text in ("False", "false", "0"):
        return False
    raise ValueError(f"expected True or False, got {text!r}")


def _parse_float(text: str) -> float:
    if text == "":
        raise ValueError("empty value")
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    value = float(text)
    mantissa = text.lower().split("e")[0]
    if math.isinf(value) or (value == 0 and any(c in "123456789" for c in mantissa)) \
            or (value != 0 and abs(value) < sys.float_info.min):
        raise ValueError(f"number out of range: {text!r}")
    return value


def _parse_int(text: str) -> int:
    value = _parse_float(text)  # the official files write some integers as "64.0"
    if not value.is_integer():
        raise ValueError(f"expected an integer, got {text!r}")
    if abs(value) > _MAX_INT:
        raise ValueError(f"absurd value {text!r}")
    return int(value)


_PARSERS = {int: _parse_int, float: _parse_float, bool: _parse_bool, str: str}


def _validate_row(row: Mapping[str, Any]) -> None:
    """Range checks shared by both formats and by rows recorded in memory."""
    if row["stage"] not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {row['stage']!r}")
    if row["topk_kind"] not in TOPK_KINDS:
        raise ValueError(f"topk_kind must be one of {TOPK_KINDS}, got {row['topk_kind']!r}")
    for name in ("step", "layer", "head", "d_head", "query_rows", "kv_len", "keys_fetched", "values_fetched",
                 "lsb_refetch_rows", "sequence"):
        if not 0 <= row.get(name, 0) <= _MAX_DIM:
            raise ValueError(f"{name} = {row[name]} is outside [0, {_MAX_DIM}]")
    if row["d_head"] == 0:
        raise ValueError("d_head must be positive")
    if row["d_head"] > _MAX_D_HEAD:
        raise ValueError(f"d_head = {row['d_head']} is absurd (at most {_MAX_D_HEAD})")
    if not math.isfinite(row["threshold"]):
        raise ValueError("threshold must be a finite number")
    if row["topk_kind"] != "none" and not 0 <= row["topk_k"] <= _MAX_DIM:
        raise ValueError(f"topk_k = {row['topk_k']} is outside [0, {_MAX_DIM}]")
    if row["keys_fetched"] > row["kv_len"]:
        raise ValueError(f"keys_fetched ({row['keys_fetched']}) exceeds kv_len ({row['kv_len']})")
    if row["values_fetched"] > row["kv_len"]:
        raise ValueError(f"values_fetched ({row['values_fetched']}) exceeds kv_len ({row['kv_len']})")
    if row["lsb_refetch_rows"] > row["query_rows"]:
        raise ValueError(f"lsb_refetch_rows ({row['lsb_refetch_rows']}) exceeds query_rows ({row['query_rows']})")
    for name in ("k_msb_bits", "k_lsb_bits", "q_bits", "v_bits"):
        if not (row[name] == -1 or 0 <= row[name] <= 32):
            raise ValueError(f"{name} = {row[name]} must be -1 (unquantized) or in [0, 32]")


class Trace:
    """Rows of per-head work plus model metadata.

    meta: free-form dict; the patcher writes family, layers, heads, kv_heads, d_model, d_head, d_ff, config.
    """

    def __init__(self, rows: pd.DataFrame | None = None, meta: Mapping[str, Any] | None = None):
        if rows is None:
            rows = pd.DataFrame({c.name: pd.Series(dtype=_pandas_dtype(c.kind)) for c in COLUMNS})
        if "sequence" not in rows.columns:
            rows = rows.assign(sequence=np.zeros(len(rows), dtype=np.int64))
        missing = [n for n in COLUMN_NAMES if n not in rows.columns]
        if missing:
            raise TraceFormatError(f"trace rows lack columns {missing}")
        self.rows = rows.loc[:, list(COLUMN_NAMES)].reset_index(drop=True)
        self.meta: dict[str, Any] = dict(meta or {})

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> Trace:
        """Build from dicts with every column (`sequence` may be left out: 0); each row is range-checked."""
        records = [rec if "sequence" in rec else {**rec, "sequence": 0} for rec in records]
        for i, rec in enumerate(records):
            missing = [n for n in COLUMN_NAMES if n not in rec]
            if missing:
                raise TraceFormatError(f"record {i} lacks {missing}")
            try:
                _validate_row(rec)
            except ValueError as err:
                raise TraceFormatError(f"record {i}: {err}") from None
        frame = pd.DataFrame.from_records(records, columns=list(COLUMN_NAMES))
        return cls(_typed(frame), meta)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Trace:
        """Build from one array per column (trusted rows, e.g. recorded by the patcher), typed as the schema says.

        `sequence` may be absent (every row is sequence 0).
        """
        frame = pd.DataFrame({name: columns[name] for name in COLUMN_NAMES if name in columns})
        if "sequence" not in frame.columns:
            frame["sequence"] = 0
        return cls(_typed(frame), meta)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        stages = ", ".join(f"{s}={n}" for s, n in self.rows["stage"].value_counts().items())
        return f"Trace({len(self)} rows: {stages or 'empty'}; meta keys {sorted(self.meta)})"

    def to_frame(self) -> pd.DataFrame:
        """A copy of the rows as a pandas DataFrame (one row per stage, step, layer, head)."""
        return self.rows.copy()

    def column(self, name: str) -> np.ndarray:
        return self.rows[name].to_numpy()

    def concat(self, other: Trace) -> Trace:
        return Trace(pd.concat([self.rows, other.rows], ignore_index=True), {**self.meta, **other.meta})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trace) and self.meta == other.meta and self.rows.equals(other.rows)

    # ---- native format -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the native format atomically (temp file + rename).

        Checks every row first (as Trace.load and spatten-sim would), so it never writes a file they refuse.
        """
        for i, rec in enumerate(self.rows.to_dict("records")):
            try:
                _validate_row(rec)
            except (ValueError, TypeError) as err:
                raise TraceFormatError(f"row {i}: {err}") from None
        _check_work(self.rows)
        try:
            meta = json.dumps(self.meta, sort_keys=True, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as err:
            raise TraceFormatError(f"meta is not JSON: {err}") from None
        buf = io.StringIO()
        buf.write(f"{_MAGIC}{FORMAT_VERSION}\n# meta {meta}\n")
        buf.write(",".join(COLUMN_NAMES) + "\n")  # the grammar has no quoting; no field holds a comma
        for rec in self.rows.itertuples(index=False):
            buf.write(",".join(_format_value(v) for v in rec) + "\n")
        return atomic_write_text(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a native trace file (or, if it starts with the official header, an official CSV)."""
        path = Path(path)
        text = _read_text(path)
        lines = _lines(text)
        if lines and lines[0].startswith("iteration_id"):
            return cls.from_official_csv(path)
        if not lines or not lines[0].startswith(_MAGIC):
            raise TraceFormatError(f"{path}:1: not a spatten trace (expected '{_MAGIC}{FORMAT_VERSION}')")
        version = _trim(lines[0][len(_MAGIC):])
        columns_of = {"1": V1_COLUMN_NAMES, str(FORMAT_VERSION): COLUMN_NAMES}
        if version not in columns_of:
            raise TraceFormatError(f"{path}:1: trace format version {version!r}; this spatten reads "
                                   f"{' and '.join(sorted(columns_of))}")
        expected_header = columns_of[version]
        if len(lines) < 3 or not lines[1].startswith("# meta "):
            raise TraceFormatError(f"{path}:2: expected '# meta {{...}}'")
        try:
            meta = json.loads(_trim(lines[1][len("# meta "):]), parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as err:
            raise TraceFormatError(f"{path}:2: metadata is not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise TraceFormatError(f"{path}:2: metadata is not a JSON object")
        header = _fields(lines[2])
        if tuple(header) != expected_header:
            raise TraceFormatError(f"{path}:3: header {header} differs from the v{version} columns "
                                   f"{list(expected_header)}")
        records = []
        for lineno, line in enumerate(lines[3:], start=4):
            if _blank(line):
                continue
            fields = _fields(line)
            records.append(_parse_fields(path, lineno, dict(zip(header, fields)), len(fields), len(header)))
        if not records:
            raise TraceFormatError(f"{path}: no data rows")
        return cls._checked(pd.DataFrame.from_records(records, columns=list(expected_header)), meta, path)

    # ---- official SpAtten workload CSV ---------------------------------------------------------------
    @classmethod
    def from_official_csv(cls, path: str | os.PathLike) -> Trace:
        """Read an official SpAtten workload CSV (spatten_hardware/hardware/workloads/*.csv)."""
        path = Path(path)
        lines = _lines(_read_text(path))
        expected = [name for name, _ in OFFICIAL_COLUMNS]
        if not lines or _blank(lines[0]):
            raise TraceFormatError(f"{path}:1: empty file")
        header = _fields(lines[0])
        if header != expected:
            missing = [c for c in expected if c not in header]
            raise TraceFormatError(f"{path}:1: header is not the official workload header"
                                   + (f" (missing {missing})" if missing else f" (expected {expected})"))
        meta: dict[str, Any] = {"source": "official-csv"}
        records = []
        for lineno, line in enumerate(lines[1:], start=2):
            if _blank(line):
                continue
            fields = _fields(line)
            # The last line holds the algorithm config path in iteration_id, other fields empty.
            if len(fields) == len(expected) and all(_trim(f) == "" for f in fields[1:]) and _trim(fields[0]):
                meta["official_config"] = fields[0]
                continue
            if len(fields) != len(expected):
                raise TraceFormatError(f"{path}:{lineno}: expected {len(expected)} fields, got {len(fields)} "
                                       "(truncated row?)")
            official = dict(zip(expected, fields))
            raw = {trace_name: official[name] for name, trace_name in OFFICIAL_COLUMNS}
            try:
                raw["lsb_refetch_rows"] = "1" if _parse_bool(raw["lsb_refetch_rows"]) else "0"
                raw["topk_kind"] = "token" if _parse_bool(raw["topk_kind"]) else "none"
            except ValueError as err:
                raise TraceFormatError(f"{path}:{lineno}: {err}") from None
            raw.update(stage="generate", head_kept="True", query_rows="1", sequence="0")
            records.append(_parse_fields(path, lineno, raw, len(COLUMN_NAMES), len(COLUMN_NAMES), _OFFICIAL_NAME_OF))
        if not records:
            raise TraceFormatError(f"{path}: no data rows")
        return cls._checked(pd.DataFrame.from_records(records, columns=list(COLUMN_NAMES)), meta, path)

    @classmethod
    def _checked(cls, frame: pd.DataFrame, meta: Mapping[str, Any], path: Path) -> Trace:
        trace = cls(_typed(frame), meta)
        try:
            _check_work(trace.rows)
        except TraceFormatError as err:
            raise TraceFormatError(f"{path}: {err}") from None
        return trace

    def to_official_csv(self, path: str | os.PathLike) -> Path:
        """Write the official workload CSV (generation rows of kept heads; byte-compatible with the originals).

        Raises TraceFormatError when the trace has rows that format cannot express (summarize stage,
        several query rows per head, or head top-k events).
        """
        kept = self.rows[self.rows["head_kept"]]
        if (kept["stage"] != "generate").any():
            raise TraceFormatError("the official CSV only describes generation; this trace has summarize rows "
                                   "(save it with Trace.save instead)")
        if (kept["query_rows"] != 1).any():
            raise TraceFormatError("the official CSV has one query row per head; this trace has more")
        if (kept["topk_kind"] == "head").any():
            raise TraceFormatError("the official CSV cannot express head top-k events")
        if (kept["sequence"] != 0).any():
            raise TraceFormatError("the official CSV describes one sequence; this trace is a batch "
                                   "(save it with Trace.save instead)")
        buf = io.StringIO()
        buf.write(",".join(name for name, _ in OFFICIAL_COLUMNS) + "\n")
        for rec in kept.itertuples(index=False):
            r = rec._asdict()
            row = []
            for name, trace_name in OFFICIAL_COLUMNS:
                value = r[trace_name]
                if name == "embedding_length_D":
                    row.append(f"{int(value)}.0")
                elif name == "if_requant":
                    row.append(str(bool(value > 0)))
                elif name == "if_topk":
                    row.append(str(value == "token"))
                else:
                    row.append(_format_value(value))
            buf.write(",".join(row) + "\n")
        if "official_config" in self.meta:
            buf.write(self.meta["official_config"] + "," * (len(OFFICIAL_COLUMNS) - 1) + "\n")
        return atomic_write_text(Path(path), buf.getvalue())


def _pandas_dtype(kind: type) -> str:
    return {int: "int64", float: "float64", bool: "bool", str: "object"}[kind]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({c.name: _pandas_dtype(c.kind) for c in COLUMNS if c.name in frame.columns})


def _format_value(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_work(rows: pd.DataFrame) -> None:
    """The simulator's bound on one run's work (about 4e9 DRAM transactions; hwsim/src/trace.cpp)."""
    if len(rows) == 0:
        return
    bytes_per_row = rows["d_head"].to_numpy(dtype=float) * 32 / 8
    tx = (rows["keys_fetched"].to_numpy(dtype=float) + rows["values_fetched"].to_numpy(dtype=float)) \
        * bytes_per_row / 32 * 2
    tx += np.where(rows["stage"].to_numpy() == "summarize", rows["query_rows"].to_numpy(dtype=float), 0.0) \
        * bytes_per_row / 32
    if tx.sum() > _MAX_TRANSACTIONS:
        raise TraceFormatError(f"the trace asks for about {int(tx.sum())} DRAM transactions, more than the "
                               f"simulator's limit of {int(_MAX_TRANSACTIONS)} (absurd sizes?)")


def _parse_fields(path: Path, lineno: int, raw: Mapping[str, str], n_fields: int, n_expected: int,
                  display: Mapping[str, str] | None = None) -> dict:
    if n_fields != n_expected:
        raise TraceFormatError(f"{path}:{lineno}: expected {n_expected} fields, got {n_fields} (truncated row?)")
    rec: dict[str, Any] = {}
    for name, text in raw.items():
        column = _COLUMN_BY_NAME[name]
        try:
            rec[name] = _PARSERS[column.kind](_trim(text))
        except ValueError as err:
            shown = (display or {}).get(name, name)
            raise TraceFormatError(f"{path}:{lineno}: column {shown}: {err}") from None
    try:
        _validate_row(rec)
    except ValueError as err:
        raise TraceFormatError(f"{path}:{lineno}: {err}") from None
    return rec


def _read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"trace file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise TraceFormatError(f"{path}: not a text file (invalid UTF-8: {err})") from None
    if "\0" in text:
        raise TraceFormatError(f"{path}: not a text file (NUL byte)")
    return text
