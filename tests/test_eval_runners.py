"""Runner building blocks against independent references: sentence-transformers' own MiniLM pipeline, the
unpatched model's single forward, hand-computed windows and trace summaries."""

import numpy as np
import pytest
import torch

from spatten.eval import lm, run_glue
from spatten.eval.hardware import kept_summary
from spatten.eval.tasks import glue_task
from spatten.models import load_model
from spatten.models.embed import _output_mask, cosine_rows, embed_sentences
from spatten.trace import COLUMNS, Trace
from spatten.training.heads import fit_linear_head, train_head


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


@pytest.fixture(scope="module")
def stories(data_dir):
    return load_model("stories260K", data_dir=data_dir)


def test_embeddings_match_sentence_transformers(minilm):
    import sentence_transformers as st
    texts = ["A man is playing a guitar.", "Two dogs run.", "The quick brown fox jumps over the lazy dog again."]
    reference = st.SentenceTransformer(str(minilm.path), device="cpu").encode(texts)
    ours = embed_sentences(minilm.model, minilm.tokenizer, texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_stsb_spearman_matches_scipy_on_reference_embeddings(minilm, data_dir):
    import sentence_transformers as st
    from scipy.stats import spearmanr

    dev = glue_task("sts-b").read("dev", data_dir).head(60)
    model = st.SentenceTransformer(str(minilm.path), device="cpu")
    expected = spearmanr(cosine_rows(model.encode(dev.text_a), model.encode(dev.text_b)), dev.labels).statistic
    result = run_glue("sts-b", minilm, None, n_examples=60, simulate=False, data_dir=data_dir)
    assert result["metrics"]["spearman"] == pytest.approx(expected, abs=1e-6)
    assert result["kept"]["token_keep_measured"] == 1.0


def test_pooling_mask_keeps_only_survivors():
    hidden = torch.zeros(2, 5, 3)
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])

    class Handle:
        last_kept_positions = [torch.tensor([[0, 1, 2, 3, -1], [0, 1, 2, 3, 4]]),
                               torch.tensor([[0, 2, -1], [0, 3, 4]])]

    mask = _output_mask(hidden, attention, Handle())
    assert mask.tolist() == [[True, False, True, False, False], [True, False, False, True, True]]
    assert _output_mask(hidden, attention, None).tolist() == attention.bool().tolist()
    with pytest.raises(RuntimeError, match="no patch handle"):
        _output_mask(torch.zeros(2, 3, 3), attention, None)


def test_linear_head_fits_separable_data_and_caches(minilm, tmp_path, data_dir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    w, b, acc = fit_linear_head(x, y, 2)
    assert acc >= 0.98 and w.shape == (2, 5)
    head = train_head(minilm, glue_task("rte"), n_train=16, cache_dir=tmp_path, data_dir=data_dir)
    cached = list((tmp_path / "heads").glob("rte-*.npz"))
    assert len(cached) == 1 and head.weight.shape == (2, 4 * 384)  # pair features [u, v, |u-v|, u*v]
    again = train_head(minilm, glue_task("rte"), n_train=16, cache_dir=tmp_path, data_dir=data_dir)
    np.testing.assert_array_equal(again.weight, head.weight)
    with pytest.raises(ValueError, match="regression task"):
        train_head(minilm, glue_task("sts-b"), cache_dir=tmp_path)


def test_sliding_windows_score_every_token_once():
    ids = list(range(10))
    windows = lm.sliding_windows(ids, window=4, stride=2)
    assert [(w.ids, w.context) for w in windows] == [((0, 1, 2, 3), 1), ((2, 3, 4, 5), 2), ((4, 5, 6, 7), 2),
                                                     ((6, 7, 8, 9), 2)]
    scored = [t for w in windows for t in w.ids[w.context:]]
    assert scored == ids[1:] and lm.tokens_scored(windows) == 9
    with pytest.raises(ValueError, match="stride must be in"):
        lm.sliding_windows(ids, 4, 4)


def test_teacher_forced_decoding_equals_one_forward(stories):
    # the unpatched decode loop through the KV cache must reproduce the single causal forward
    win = lm.Window(tuple([1] + list(range(40, 70))), 5)
    np.testing.assert_allclose(lm.decoded_logits(stories.model, win), lm.dense_logits(stories.model, win),
                               atol=1e-4)


def test_sampled_stories_are_reproducible(stories):
    a = lm.sample_stories(stories.model, 1, 12, seed=3)
    assert a == lm.sample_stories(stories.model, 1, 12, seed=3)
    assert a != lm.sample_stories(stories.model, 1, 12, seed=4)
    assert a[0][0] == 1 and len(a[0]) == 12


def _row(**kw):
    base = {c.name: {int: 0, float: -1.0, bool: False, str: "none"}[c.kind] for c in COLUMNS}
    base.update(stage="summarize", d_head=8, head_kept=True, k_msb_bits=-1, k_lsb_bits=-1, q_bits=-1, v_bits=-1,
                topk_k=-1)
    base.update(kw)
    return base


def test_kept_summary_by_hand():
    trace = Trace.from_records([
        _row(layer=0, head=0, query_rows=4, kv_len=10, keys_fetched=10, values_fetched=10),
        _row(layer=0, head=1, query_rows=4, kv_len=10, keys_fetched=10, values_fetched=10, lsb_refetch_rows=2),
        _row(layer=1, head=0, query_rows=4, kv_len=10, keys_fetched=5, values_fetched=2),
        _row(layer=1, head=1, head_kept=False, query_rows=4, kv_len=10, keys_fetched=0, values_fetched=0),
    ])
    s = kept_summary(trace)
    assert s["token_keep_measured"] == pytest.approx(25 / 40)
    assert s["head_keep_measured"] == 0.75
    assert s["value_keep_measured"] == pytest.approx(22 / 40)
    assert s["lsb_refetch_rate"] == pytest.approx(2 / 12)
    assert s["token_keep_per_layer"] == [1.0, 0.25]
    with pytest.raises(ValueError, match="empty"):
        kept_summary(Trace())
