"""`import spatten` stays light, and a compiled module that cannot load says why."""

import subprocess
import sys

import pytest

from spatten import _native


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_import_spatten_loads_neither_torch_nor_cuda():
    assert _python("import sys, spatten; print('torch' in sys.modules)") == "False"
    # Loading the ops pulls torch in, but never initialises CUDA.
    assert _python("import torch, spatten.ops; print(torch.cuda.is_initialized())") == "False"


def test_missing_module_is_reported_as_not_built():
    with pytest.raises(_native.NativeModuleError, match="spatten._not_a_module is not built"):
        _native.load("_not_a_module")


def test_abi_mismatch_is_named():
    err = ImportError("/site-packages/spatten/_C.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev")
    message = _native._explain("_C", err)
    assert "ABI mismatch" in message and "different torch" in message and "pip install" in message


def test_other_load_failures_keep_the_loader_message():
    message = _native._explain("_hwsim", ImportError("libyaml-cpp.so.0.7: cannot open shared object file"))
    assert "libyaml-cpp.so.0.7" in message and "failed to load" in message
