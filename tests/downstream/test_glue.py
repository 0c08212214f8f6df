"""GLUE readers on small files in the real GLUE TSV layouts, and on a prepared TFDS dataset."""

from __future__ import annotations

import numpy as np
import pytest

from bert_jax.downstream import glue

MNLI_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
    "label5\tgold_label"
)
# Per task: file -> contents (header as in the GLUE download), and the first row's expected
# (text_a, text_b, label) with TFDS label ids.
FIXTURES = {
    "cola": (
        {
            "train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n"
            "gj04\t0\t*\tThey drank the pub.\n",
            "dev.tsv": 'cj99\t0\t*\tThe more he reads, the "more books.\n',
        },
        ("Our friends won't buy this analysis.", None, 1),
    ),
    "sst2": (
        {
            "train.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n",
            "dev.tsv": 'sentence\tlabel\n" unflinchingly bleak\t0\n',
        },
        ("it 's a charming and often affecting journey . ", None, 1),
    ),
    "mrpc": (
        {
            "train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
            '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " .\t'
            'Referring to him as only " the witness " , Amrozi accused his brother .\n',
            "dev.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA .\tB .\n",
        },
        (
            'Amrozi accused his brother , whom he called " the witness " .',
            'Referring to him as only " the witness " , Amrozi accused his brother .',
            1,
        ),
    ),
    "qqp": (
        {
            "train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            "133273\t213221\t213222\tHow is the life of a math student?\t"
            "Which level is enough?\t0\n",
            "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tA?\tA?\t1\n",
        },
        ("How is the life of a math student?", "Which level is enough?", 0),
    ),
    "stsb": (
        {
            "train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
            "sentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\t"
            "A plane is taking off.\tAn air plane is taking off.\t5.000\n",
            "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
            "sentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\t"
            "A man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t5.000\n",
        },
        ("A plane is taking off.", "An air plane is taking off.", 5.0),
    ),
    "mnli": (
        {
            "train.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
            "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\t"
            "label1\tgold_label\n0\t31193\t31193n\tgovernment\t( ( Conceptually cream ) )\t"
            "( Product )\t(ROOT (S))\t(ROOT (S))\t"
            "Conceptually cream skimming has two dimensions .\t"
            "Product and geography are what make cream skimming work . \tneutral\tneutral\n",
            "dev_matched.tsv": MNLI_HEADER + "\n0\t63735\t63735n\tslate\tp\tp\tp\tp\t"
            "The new rights are nice enough\tEveryone really likes the newest benefits \t"
            "neutral\tentailment\tneutral\tneutral\tneutral\tneutral\n",
            "dev_mismatched.tsv": MNLI_HEADER + "\n0\t75290\t75290c\tletters\tp\tp\tp\tp\t"
            "Your contribution helped make it possible.\tMy contribution meant nothing.\t"
            "contradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\t"
            "contradiction\n",
        },
        (
            "Conceptually cream skimming has two dimensions .",
            "Product and geography are what make cream skimming work . ",
            1,  # neutral
        ),
    ),
    "qnli": (
        {
            "train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\t"
            "The new constitution came into force.\tentailment\n",
            "dev.tsv": "index\tquestion\tsentence\tlabel\n0\tQ?\tS.\tnot_entailment\n",
        },
        ("What came into force?", "The new constitution came into force.", 0),
    ),
    "rte": (
        {
            "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\t"
            "Christopher Reeve had an accident.\tnot_entailment\n",
            "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n",
        },
        ("Dana Reeve died.", "Christopher Reeve had an accident.", 1),
    ),
    "wnli": (
        {
            "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin through a "
            "carrot.\tThe carrot had a hole.\t1\n",
            "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t0\n",
        },
        ("I stuck a pin through a carrot.", "The carrot had a hole.", 1),
    ),
}


def _write_task(root, name):
    files, _ = FIXTURES[name]
    folder = root / glue.TASKS[name].folder
    folder.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (folder / filename).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_tsv_reader_parses_the_real_layouts(tmp_path, name):
    _write_task(tmp_path, name)
    task = glue.TASKS[name]
    train = glue.read_tsv(str(tmp_path), name, "train")
    text_a, text_b, label = FIXTURES[name][1]
    assert (train[0].text_a, train[0].text_b, train[0].label) == (text_a, text_b, label)
    for split in task.eval_splits:
        examples = glue.read_tsv(str(tmp_path), task, split)
        assert len(examples) == 1
        if not task.is_regression:
            assert 0 <= examples[0].label < task.num_labels


def test_task_table_matches_glue():
    assert sorted(glue.TASKS) == [
        "cola",
        "mnli",
        "mrpc",
        "qnli",
        "qqp",
        "rte",
        "sst2",
        "stsb",
        "wnli",
    ]
    assert glue.TASKS["stsb"].num_labels == 1 and glue.TASKS["stsb"].metrics == (
        "pearson",
        "spearman",
    )
    assert glue.TASKS["cola"].metrics == ("matthews_corr",)
    assert glue.TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert glue.TASKS["mnli"].num_labels == 3


def test_quote_characters_are_plain_text(tmp_path):
    # csv's default quoting would swallow the tab and newline after an opening quote.
    _write_task(tmp_path, "cola")
    (example,) = glue.read_tsv(str(tmp_path), "cola", "validation")
    assert example.text_a == 'The more he reads, the "more books.'
    assert example.label == 0


def test_task_folder_itself_is_accepted(tmp_path):
    folder = _write_task(tmp_path, "sst2")
    assert glue.read_tsv(str(folder), "sst2", "train")[0].label == 1


def test_malformed_rows_name_file_and_line(tmp_path):
    folder = tmp_path / "RTE"
    folder.mkdir()
    path = folder / "train.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\tonly two\n")
    with pytest.raises(ValueError, match=rf"{path}:3: 2 tab-separated columns"):
        glue.read_tsv(str(tmp_path), "rte", "train")
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tmaybe\n")
    with pytest.raises(ValueError, match=rf"{path}:2: label 'maybe'"):
        glue.read_tsv(str(tmp_path), "rte", "train")
    (tmp_path / "STS-B").mkdir()
    header = FIXTURES["stsb"][0]["train.tsv"].splitlines()[0]
    (tmp_path / "STS-B" / "train.tsv").write_text(header + "\n" + "\t".join("x" * 10) + "\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: score 'x' is not a number"):
        glue.read_tsv(str(tmp_path), "stsb", "train")
    with pytest.raises(FileNotFoundError, match="CoLA/train.tsv"):
        glue.read_tsv(str(tmp_path), "cola", "train")
    with pytest.raises(ValueError, match="no split 'test'"):
        glue.read_tsv(str(tmp_path), "rte", "test")


@pytest.mark.parametrize("score", ["42", "-0.5", "nan"])
def test_an_stsb_score_outside_0_to_5_names_file_and_line(tmp_path, score):
    folder = _write_task(tmp_path, "stsb")
    train = (folder / "train.tsv").read_text().splitlines()
    # The real first row with its score (column 10) replaced: before, read as is and
    # trained on as a regression target 8x past the scale.
    row = train[1].split("\t")
    path = folder / "train.tsv"
    path.write_text("\n".join([*train, "\t".join([*row[:-1], score])]) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:{len(train) + 1}: score '{score}' outside"):
        glue.read_tsv(str(tmp_path), "stsb", "train")


def test_tfds_reader_on_a_prepared_array_record_dataset(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from etils import epath

    class GlueMrpcFixture(tfds.core.GeneratorBasedBuilder):
        """glue/mrpc's features, prepared locally (the real one needs a download)."""

        VERSION = tfds.core.Version("1.0.0")

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            return epath.Path(__file__)

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "sentence1": tfds.features.Text(),
                    "sentence2": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["not_equivalent", "equivalent"]),
                    "idx": tfds.features.Scalar(np.int32),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(4), "validation": self._generate_examples(2)}

        def _generate_examples(self, count):
            for i in range(count):
                yield (
                    i,
                    {
                        "sentence1": f"first “{i}”",
                        "sentence2": f"second {i}",
                        "label": i % 2,
                        "idx": i,
                    },
                )

    data_dir = str(tmp_path / "tfds")
    builder = GlueMrpcFixture(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_dir=str(tmp_path / "downloads"))
    examples = glue.read_examples("mrpc", "validation", data_dir, "tfds", "glue_mrpc_fixture")
    pairs = sorted((e.text_a, e.text_b, e.label) for e in examples)
    assert pairs == [("first “0”", "second 0", 0), ("first “1”", "second 1", 1)]
    with pytest.raises(FileNotFoundError, match="array_record"):
        glue.read_tfds("mrpc", "validation", data_dir, "not_prepared_here")
