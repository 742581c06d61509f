"""One evaluation run = one model x one task x one SpAttenConfig, with its accuracy and its simulated hardware.

`run_glue` and `run_lm` return a JSON-ready dict:
    kind, task, model, config, n_examples (+ subset flag), metrics, headline {name, value},
    kept {token/head/value keep measured from the trace, per layer}, hardware {cycles, dram_bytes,
    energy_joules, speedup/dram/energy reduction vs dense, preset} (or None when not simulated), wall_seconds
    (measured time of the patched forward passes on this machine; hardware.seconds is the simulated time).
With `out_dir` they also write result.json, config.yaml, trace.csv and hardware.json there, each atomically.
Options, preset and output directory are checked before the model loads (spatten.eval.checks).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from spatten.atomic import atomic_write_text, check_writable_dir
from spatten.data import require_file
from spatten.eval import hardware, lm
from spatten.eval.checks import check_preset, check_run_options
from spatten.eval.metrics import perplexity
from spatten.eval.tasks import GlueTask, glue_task, lm_corpus
from spatten.models.embed import cosine_rows, embed_sentences
from spatten.threads import torch_threads

STORIES_CORPUS = "stories"  # text sampled from the unpruned model itself (see lm.sample_stories)


def resolve_config(config: Any = None):
    """A SpAttenConfig from None (no pruning), a dict, a YAML path or a SpAttenConfig."""
    from spatten import SpAttenConfig

    if config is None:
        return SpAttenConfig()
    if isinstance(config, SpAttenConfig):
        return config
    if isinstance(config, Mapping):
        return SpAttenConfig.from_dict(dict(config))
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        return SpAttenConfig.from_yaml(path.read_text())
    raise TypeError(f"config must be None, a dict, a YAML path or a SpAttenConfig, got {type(config).__name__}")


def _check_inputs(kind: str, options: dict, preset: str, simulate: bool, out_dir, model, data_dir) -> None:
    """Everything that can be checked without loading the model, so bad input fails in a second."""
    from spatten.models import LoadedModel, check_model

    check_run_options(kind, options, where=f"run_{kind}")
    if not isinstance(model, LoadedModel):
        check_model(model, "encoder" if kind == "glue" else "decoder", data_dir)
    if simulate:
        check_preset(preset)
    if out_dir is not None:
        check_writable_dir(out_dir)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=False)


def _load(model, kind: str, data_dir):
    from spatten.models import LoadedModel, load_model

    return model if isinstance(model, LoadedModel) else load_model(model, kind=kind, data_dir=data_dir)


def _finish(result: dict, trace, preset: str, simulate: bool, out_dir, annotate) -> dict:
    """Add kept/hardware summaries (and the caller's annotations) and write the run's files."""
    result.update(annotate or {})
    result["kept"] = hardware.kept_summary(trace)
    report = None
    if simulate:
        report = hardware.simulate(trace, preset)
        result["hardware"] = hardware.hardware_summary(report, preset)
    else:
        result["hardware"] = None
    if out_dir is not None:
        write_run(Path(out_dir), result, trace, report)
    return result


def write_run(out_dir: Path, result: dict, trace=None, report=None) -> None:
    """Write a run's files atomically; result.json goes last, so its presence means the run is complete."""
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(result["config"], sort_keys=True))
    if trace is not None:
        trace.save(out_dir / "trace.csv")
    if report is not None:
        report.to_json(out_dir / "hardware.json")
    atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def run_glue(task: str | GlueTask = "sts-b", model=None, config=None, *, n_examples: int | None = None,
             batch_size: int = 32, max_length: int = 128, preset: str = "spatten", simulate: bool = True,
             out_dir=None, head_train: int = 2000, cache_dir=None, data_dir=None, seed: int = 0,
             annotate: dict | None = None, threads: int | None = 1, progress: bool = False) -> dict:
    """Score a (patched) encoder on a GLUE dev set.

    STS-B is scored without training: cosine similarity of the two sentence embeddings against the gold
    scores. Classification tasks use a linear head fitted on the unpatched encoder (cached, see
    spatten.training.heads); the patched encoder then feeds that head. n_examples: first n dev examples.
    threads: torch intra-op threads for the run (see torch_threads). progress: a progress bar on stderr.
    """
    import spatten
    from spatten.training.heads import train_head

    task = glue_task(task) if isinstance(task, str) else task
    _check_inputs("glue", dict(n_examples=n_examples, batch_size=batch_size, max_length=max_length,
                               head_train=head_train, threads=threads), preset, simulate, out_dir, model, data_dir)
    cfg = resolve_config(config)
    full = task.read("dev", data_dir)
    dev = full.head(n_examples)
    loaded = _load(model, "encoder", data_dir)
    head = None if task.is_regression else train_head(loaded, task, n_train=head_train, seed=seed,
                                                      max_length=max_length, cache_dir=cache_dir, data_dir=data_dir)
    start = time.perf_counter()
    batches = -(-len(dev) // batch_size) * (2 if task.is_pair else 1)
    with torch_threads(threads), spatten.patch(loaded.model, cfg) as handle, \
            _progress_bar(batches, f"{task.name} batches", progress) as bar:
        emb = lambda texts: embed_sentences(loaded.model, loaded.tokenizer, texts, batch_size=batch_size,  # noqa
                                            max_length=max_length, handle=handle, on_batch=bar.update)
        u = emb(dev.text_a)
        v = emb(dev.text_b) if task.is_pair else None
        trace = handle.trace
    if task.is_regression:
        predictions = cosine_rows(u, v)
    else:
        predictions = head.predict(u, v)
    scores = task.score(predictions, dev.labels)
    result = {
        "kind": "glue", "task": task.name, "model": loaded.name, "config": cfg.to_dict(),
        "split": "dev", "n_examples": len(dev), "subset": len(dev) < len(full),
        "metrics": scores, "headline": {"name": task.headline_metric, "value": scores[task.headline_metric]},
        "head": None if head is None else {"n_train": head.n_train, "train_accuracy": head.train_accuracy},
        "wall_seconds": time.perf_counter() - start,
    }
    return _finish(result, trace, preset, simulate, out_dir, annotate)


def _counted(value, bar):
    bar.update()
    return value


def lm_windows(data: str, loaded, *, max_tokens: int, window: int, stride: int, seed: int = 0,
               data_dir=None) -> list[lm.Window]:
    """The scored windows of a corpus (or of the model's own sampled stories) for this model's tokenizer."""
    if data == STORIES_CORPUS:
        n = max(1, round(max_tokens / window))
        bos = getattr(loaded.tokenizer, "bos_token_id", None)
        stories = lm.sample_stories(loaded.model, n, window, seed=seed, bos_token_id=1 if bos is None else bos)
        return [lm.Window(tuple(s), 1) for s in stories]
    corpus = lm_corpus(data)
    # ~4 characters per token is generous for every tokenizer here; cut after tokenizing
    text = corpus.read(data_dir, max_chars=max_tokens * 8)
    ids = loaded.encode(text)[:max_tokens + 1]
    return lm.sliding_windows(ids, window, stride)


def run_lm(data: str = "wikitext-2", model=None, config=None, *, max_tokens: int = 1024, window: int = 256,
           stride: int = 128, preset: str = "spatten", simulate: bool = True, out_dir=None, data_dir=None,
           seed: int = 0, windows: list[lm.Window] | None = None, annotate: dict | None = None,
           threads: int | None = 1, progress: bool = False) -> dict:
    """Perplexity of a (patched) decoder, plus KL divergence and top-1 agreement with the unpruned model.

    data: an LM corpus name (spatten.eval.tasks.LM_CORPORA) or "stories" (sampled from the unpruned model
    with `seed`). max_tokens: tokens of the corpus to score; window/stride: the sliding window.
    progress: a progress bar on stderr.
    """
    import spatten

    _check_inputs("lm", dict(max_tokens=max_tokens, window=window, stride=stride, threads=threads), preset,
                  simulate, out_dir, model, data_dir)
    if windows is None and data != STORIES_CORPUS:
        corpus = lm_corpus(data)
        require_file(corpus.path(data_dir), f"LM corpus {corpus.name}")
    cfg = resolve_config(config)
    loaded = _load(model, "decoder", data_dir)
    max_pos = getattr(loaded.model.config, "max_position_embeddings", None)
    if max_pos is not None and window > max_pos:
        raise ValueError(f"window {window} exceeds the model's {max_pos} positions")
    start = time.perf_counter()
    with torch_threads(threads):
        if windows is None:
            windows = lm_windows(data, loaded, max_tokens=max_tokens, window=window, stride=stride, seed=seed,
                                 data_dir=data_dir)
        with _progress_bar(2 * len(windows), f"{data} windows", progress) as bar:
            ref = [_counted(lm.dense_logits(loaded.model, w), bar) for w in windows]
            with spatten.patch(loaded.model, cfg) as handle:
                test = [_counted(lm.decoded_logits(loaded.model, w), bar) for w in windows]
                trace = handle.trace
    n = lm.tokens_scored(windows)
    nll = sum(lm.window_nll(t, w) for t, w in zip(test, windows))
    nll_dense = sum(lm.window_nll(r, w) for r, w in zip(ref, windows))
    kl, agree = lm.agreement_stats(ref, test)
    scores = {"perplexity": perplexity(nll, n), "perplexity_dense": perplexity(nll_dense, n),
              "kl_vs_dense": kl, "agreement_vs_dense": agree}
    result = {
        "kind": "lm", "task": data, "model": loaded.name, "config": cfg.to_dict(), "n_examples": n,
        "subset": True, "windows": len(windows), "window": window, "stride": stride,
        "metrics": scores, "headline": {"name": "perplexity", "value": scores["perplexity"]},
        "wall_seconds": time.perf_counter() - start,
    }
    return _finish(result, trace, preset, simulate, out_dir, annotate)
