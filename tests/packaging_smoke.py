"""Smoke test of an installed spatten, run by tests/test_packaging.py inside a fresh venv (no pytest there).

Checks what a user touches first, each against an independent reference: the ops against spatten.ops_ref (plain
PyTorch), patch at ratio 0 against the unpatched model, the simulator module against the spatten-sim CLI, and the
version everywhere against the installed distribution's metadata. Run from a directory outside the source tree,
so that `import spatten` resolves to the installed package. Prints one line per check; exits non-zero on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

import spatten
from spatten import _native, hwsim, ops, ops_ref
from spatten.config import SpAttenConfig
from spatten.testing import random_batch, tiny_model

BIN = Path(sys.executable).parent


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        sys.exit(1)


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True)


def check_install() -> None:
    installed_from = Path(spatten.__file__).resolve()
    check("spatten imported from site-packages", "site-packages" in installed_from.parts, str(installed_from))
    check("spatten.__version__ is the distribution's version", spatten.__version__ == metadata.version("spatten"),
          spatten.__version__)
    info = _native.build_info()
    check("build info installed", info is not None)
    check("ops built against the installed torch", info.TORCH_VERSION == torch.__version__,
          f"built {info.TORCH_VERSION}, installed {torch.__version__}")
    check("portable build (no -march=native)", info.NATIVE_ARCH is False)


def check_ops() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 16) for _ in range(3))
    mask = torch.rand(2, 1, 9, 9) > 0.3
    got = ops.attention_with_importance(q, k, v, mask, 0.25)
    want = ops_ref.attention_with_importance(q, k, v, mask, 0.25)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4)
    scores = torch.randn(4, 50)
    check("topk_indices == reference", torch.equal(ops.topk_indices(scores, 7), ops_ref.topk_indices(scores, 7)))
    got_q = ops.quantize_msb_lsb(k, 4, 4, "token")
    want_q = ops_ref.quantize_msb_lsb(k, 4, 4, "token")
    check("quantize_msb_lsb == reference", all(torch.equal(g, w) for g, w in zip(got_q, want_q)))
    check("attention_with_importance == reference", True)


def check_patch_and_simulator(workdir: Path) -> None:
    model = tiny_model("bert")
    ids, mask = random_batch(model, pad=3)
    expected = model(input_ids=ids, attention_mask=mask).logits
    with spatten.patch(model, SpAttenConfig()):
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    check("patch at ratio 0 reproduces the unpatched model", True)

    model = tiny_model("gpt2")
    ids, mask = random_batch(model)
    with spatten.patch(model, SpAttenConfig.paper()) as handle:
        model(input_ids=ids, attention_mask=mask)
    trace_path = handle.trace.save(workdir / "tiny.trace")
    check("patched model records a trace", len(handle.trace) > 0, f"{len(handle.trace)} rows")

    from_module = hwsim.simulate(trace_path)
    cli = command("spatten-sim", str(trace_path), "--json", "-")
    check("spatten-sim runs a trace", cli.returncode == 0, cli.stderr.strip())
    from_cli = json.loads(cli.stdout)
    check("spatten-sim and spatten._hwsim agree", from_cli["cycles"] == from_module.cycles > 0,
          f"{from_cli['cycles']} vs {from_module.cycles} cycles")
    presets = command("spatten-sim", "--list-presets").stdout.split()
    check("presets ship in the wheel", "spatten" in presets and set(presets) == set(hwsim.list_presets()),
          " ".join(presets))


def check_cli_versions() -> None:
    sim = command("spatten-sim", "--version")
    check("spatten-sim --version", sim.stdout.strip() == f"spatten-sim {spatten.__version__}", sim.stdout.strip())
    usage = command("spatten", "--help")
    check("spatten --help", usage.returncode == 0)
    if "--version" not in usage.stdout:  # the flag lands with the CLI change of another branch
        print("note spatten --version: not in this CLI yet")
    else:
        main = command("spatten", "--version")
        check("spatten --version", main.returncode == 0 and spatten.__version__ in main.stdout, main.stdout.strip())


def main() -> None:
    check_install()
    check_ops()
    with tempfile.TemporaryDirectory() as tmp:
        check_patch_and_simulator(Path(tmp))
    check_cli_versions()
    print("smoke test passed")


if __name__ == "__main__":
    main()
