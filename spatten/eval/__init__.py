"""Evaluation: GLUE and language-model runs of patched models, their simulated hardware, sweeps and plots.

    from spatten.eval import run_glue, run_lm
    from spatten.eval.sweep import run_sweep
"""

from spatten.eval.data import DataNotFoundError, Examples, data_dir
from spatten.eval.metrics import METRICS
from spatten.eval.runners import resolve_config, run_glue, run_lm
from spatten.eval.tasks import GLUE_TASKS, LM_CORPORA, glue_task, lm_corpus

__all__ = ["DataNotFoundError", "Examples", "data_dir", "METRICS", "resolve_config", "run_glue", "run_lm",
           "GLUE_TASKS", "LM_CORPORA", "glue_task", "lm_corpus"]
