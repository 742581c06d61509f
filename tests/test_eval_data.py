"""GLUE readers and the task registry, checked against the published split sizes and label counts."""

from collections import Counter

import pytest

from spatten.eval import DataNotFoundError, GLUE_TASKS, glue_task, lm_corpus
from spatten.eval.data import data_dir

# (task, dev examples, label counts) from the GLUE dev splits (the tsv line counts minus the header).
PUBLISHED_DEV = {
    "cola": (1043, {1: 721, 0: 322}),
    "sst-2": (872, {1: 444, 0: 428}),
    "mrpc": (408, {1: 279, 0: 129}),
    "qnli": (5463, {0: 2702, 1: 2761}),
    "rte": (277, {0: 146, 1: 131}),
    "wnli": (71, {0: 40, 1: 31}),
}


def test_registry_covers_all_nine_glue_tasks():
    assert {"cola", "sst-2", "mrpc", "sts-b", "qqp", "mnli", "qnli", "rte", "wnli"} <= set(GLUE_TASKS)
    assert glue_task("SST2") is glue_task("sst-2") is glue_task("SST-2")
    assert glue_task("cola").headline_metric == "matthews"
    assert glue_task("sts-b").metrics == ("spearman", "pearson") and glue_task("sts-b").is_regression
    assert glue_task("mrpc").metrics == ("f1", "accuracy")
    with pytest.raises(KeyError, match="unknown GLUE task 'nope'"):
        glue_task("nope")


@pytest.mark.parametrize("name", sorted(PUBLISHED_DEV))
def test_dev_split_matches_published_sizes(data_dir, name):
    n, counts = PUBLISHED_DEV[name]
    ex = glue_task(name).read("dev", data_dir)
    assert len(ex) == n
    assert Counter(ex.labels) == counts
    assert all(isinstance(t, str) and t for t in ex.text_a)
    assert (ex.text_b is None) == (not glue_task(name).is_pair)


def test_quirks_bom_headerless_and_scores(data_dir):
    mrpc = glue_task("mrpc").read("dev", data_dir)
    # the BOM must not leak into the header lookup; first row of the official dev file
    assert mrpc.text_a[0].startswith("He said the foodservice pie business")
    cola = glue_task("cola").read("dev", data_dir)  # no header: the first line is data
    assert cola.text_a[0] == "The sailors rode the breeze clear of the rocks." and cola.labels[0] == 1
    sts = glue_task("sts-b").read("dev", data_dir)
    assert len(sts) == 1500 and sts.labels[0] == 5.0 and min(sts.labels) >= 0 and max(sts.labels) <= 5
    assert sts.head(10).labels == sts.labels[:10]


def test_missing_file_names_path_and_task(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"GLUE task mnli .*dev_matched\.tsv"):
        glue_task("mnli").read("dev", tmp_path)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data_dir(tmp_path / "nowhere")


def test_mnli_reads_when_a_user_has_the_files(tmp_path):
    folder = tmp_path / "glue" / "MNLI"
    folder.mkdir(parents=True)
    header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t" \
             "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    row = "0\t1\t1n\tgov\t(\t(\t(\t(\tA man eats.\tA person eats.\tentailment\tentailment\n"
    (folder / "dev_matched.tsv").write_text(header + row)
    ex = glue_task("mnli").read("dev", tmp_path)
    assert ex.text_a == ["A man eats."] and ex.text_b == ["A person eats."] and ex.labels == [1]


def test_bad_label_is_a_clear_error(tmp_path):
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "dev.tsv").write_text("sentence\tlabel\ngood film\t7\n")
    with pytest.raises(ValueError, match=r"dev\.tsv:2: label 7 outside"):
        glue_task("sst-2").read("dev", tmp_path)


def test_lm_corpora_have_published_token_counts(data_dir):
    # WikiText-2 tokenized test: 245,569 tokens counting one <eos> per line (the published count)
    raw = (data_dir / "wikitext-2" / "wiki.test.tokens").read_text(encoding="utf-8")
    assert sum(len(line.split()) + 1 for line in raw.split("\n")[:-1]) == 245569
    text = lm_corpus("wikitext-2").read(data_dir)
    assert text.startswith("= Robert Boulter =") and "\n\n" not in text
    assert lm_corpus("ptb").read(data_dir, max_chars=50).startswith("no it was n't black monday")
    with pytest.raises(KeyError, match="unknown LM corpus"):
        lm_corpus("c4")
