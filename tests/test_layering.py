"""The layers: models and training know no benchmark (spatten.eval); training reads only low-level helpers."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["spatten.models", "spatten.training.heads", "spatten.training.gpt2",
                                    "spatten.data", "spatten.threads"])
def test_lower_layers_do_not_import_eval(module):
    code = (f"import {module}, sys; bad = sorted(m for m in sys.modules if m.startswith('spatten.eval')); "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_loading_a_model_stays_below_eval(data_dir):
    code = ("import sys; from spatten.models import load_model; load_model('stories260K'); "
            "bad = sorted(m for m in sys.modules if m.startswith('spatten.eval')); assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
