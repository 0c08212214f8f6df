"""Tests for the shared sentencepiece Tokenizer on the real trained vocabulary."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.data.tokenizer import Tokenizer, split_sentences

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = REPO_ROOT / "data/vocab/spm.model"
TEXT = "The quick brown fox jumps over the lazy dog, twice in 2024."


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    assert MODEL_PATH.exists(), "data/vocab/spm.model missing; run `make vocab`"
    return Tokenizer(str(MODEL_PATH), extra_ids=100)


def test_special_ids_follow_the_contract(tokenizer):
    ids = (tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id)
    ids += (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
    assert ids == (0, 1, 2, 3, 4, 5)
    assert tokenizer.first_normal_id == 6
    pieces = [tokenizer.id_to_piece(i) for i in range(6)]
    assert pieces == ["[PAD]", "</s>", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.vocab_size == tokenizer.spm_vocab_size + 100
    assert 4000 < tokenizer.spm_vocab_size <= 8000
    specials = set(tokenizer.special_ids.tolist())
    assert {0, 1, 2, 3, 4, 5, tokenizer.sentinel_id(0), tokenizer.sentinel_id(99)} <= specials
    assert tokenizer.special_ids.dtype == np.int32
    assert min(specials - set(range(6))) == tokenizer.spm_vocab_size


def test_word_start_marks_leading_underscore_pieces(tokenizer):
    ids = tokenizer.encode("unbelievably tokenization")
    pieces = [tokenizer.id_to_piece(i) for i in ids]
    assert len(pieces) > 2  # at least one word is split into several pieces
    assert tokenizer.word_start.shape == (tokenizer.vocab_size,)
    assert tokenizer.word_start.dtype == bool
    np.testing.assert_array_equal(tokenizer.word_start[ids], [p.startswith("▁") for p in pieces])
    assert tokenizer.word_start[:6].all() and tokenizer.word_start[tokenizer.sentinel_id(0)]


def test_sentinel_ids_count_down_from_the_top(tokenizer):
    assert tokenizer.sentinel_id(0) == tokenizer.vocab_size - 1
    assert tokenizer.sentinel_id(99) == tokenizer.spm_vocab_size
    with pytest.raises(ValueError, match="extra_ids"):
        tokenizer.sentinel_id(100)
    ids = [*tokenizer.encode("Hello"), tokenizer.sentinel_id(0), *tokenizer.encode("world")]
    assert tokenizer.decode(ids) == "Hello <extra_id_0> world"


def test_encode_decode_round_trip(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.min() >= tokenizer.first_normal_id and ids.max() < tokenizer.spm_vocab_size
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.decode(np.concatenate([ids, [tokenizer.eos_id, tokenizer.pad_id]])) == TEXT
    # Byte fallback: characters never seen in training still round-trip, without [UNK].
    unseen = "Zwölf Ämter: 日本語 🙂"
    assert tokenizer.decode(tokenizer.encode(unseen)) == unseen
    assert tokenizer.unk_id not in tokenizer.encode(unseen)


def test_digits_are_split(tokenizer):
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode("2024")]
    assert [p.strip("▁") for p in pieces if p.strip("▁")] == ["2", "0", "2", "4"]


def test_split_sentences():
    text = (
        'Mr. Smith met Dr. Jones at 5 p.m. in the U.S. capital. "Really?" she asked. '
        "It was e.g. fine!\n\n  Next paragraph (short).  \nJ. R. Kennedy revised it.  "
    )
    assert split_sentences(text) == [
        "Mr. Smith met Dr. Jones at 5 p.m. in the U.S. capital.",
        '"Really?" she asked.',
        "It was e.g. fine!",
        "Next paragraph (short).",
        "J. R. Kennedy revised it.",
    ]
    assert split_sentences(" \n\n ") == []


def test_encode_document(tokenizer):
    sentences = tokenizer.encode_document("First sentence here. Second one!\n\nThird line")
    assert len(sentences) == 3
    assert all(s.dtype == np.int32 and s.ndim == 1 for s in sentences)
    decoded = [tokenizer.decode(s) for s in sentences]
    assert decoded == ["First sentence here.", "Second one!", "Third line"]
    assert tokenizer.encode_document("") == []


def test_pickle_round_trip(tokenizer):
    restored = pickle.loads(pickle.dumps(tokenizer))
    assert restored.vocab_size == tokenizer.vocab_size
    np.testing.assert_array_equal(restored.encode(TEXT), tokenizer.encode(TEXT))
    np.testing.assert_array_equal(restored.word_start, tokenizer.word_start)
    assert len(pickle.dumps(tokenizer)) < 1000  # ships the path, not the model


def test_missing_model_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make vocab"):
        Tokenizer(str(tmp_path / "missing.model"))


def test_a_directory_or_a_corrupt_model_is_a_value_error_naming_it(tmp_path):
    # sentencepiece raises a bare RuntimeError, which the CLI shows as a traceback.
    (tmp_path / "garbage.model").write_bytes(b"not a model")
    for path in (tmp_path, tmp_path / "garbage.model"):
        with pytest.raises(ValueError, match="config.data.vocab_path") as error:
            Tokenizer(str(path))
        assert repr(str(path)) in str(error.value)


def test_wrong_id_layout_is_rejected(tmp_path):
    # A model trained with sentencepiece's default layout: <unk>=0, <s>=1, </s>=2.
    sentences = split_sentences(TEXT + " Another sentence. " * 5) * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(tmp_path / "default"),
        vocab_size=40,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match="expected"):
        Tokenizer(str(tmp_path / "default.model"))
    assert tokenizer_lib.EXPECTED_SPECIAL_IDS["[MASK]"] == 5
