"""Hypothesis strategies for the objective property tests: documents and token rows.

Arrays are drawn as (kind, sizes, seed) and built with NumPy, so very long documents
cost nothing to generate and a failure shrinks to small sizes and a simple kind.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

# The real sentencepiece vocabulary's layout (bert_jax.data.tokenizer): ids 0-5 are
# [PAD] </s> [UNK] [CLS] [SEP] [MASK]; normal pieces follow.
PAD, EOS, UNK, CLS, SEP, MASK = range(6)
SPECIAL_IDS = np.arange(6)
FIRST_NORMAL = 6

# What a sentence may be made of: the edge cases named in issue 12 besides random text.
SENTENCE_KINDS = ("random", "repeated", "special", "mixed")


def _sentence(kind: str, length: int, rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    if kind == "random":
        return rng.integers(FIRST_NORMAL, vocab_size, length).astype(np.int32)
    if kind == "repeated":
        return np.full(length, rng.integers(FIRST_NORMAL, vocab_size), np.int32)
    if kind == "special":
        return rng.choice(SPECIAL_IDS, length).astype(np.int32)
    return rng.integers(0, vocab_size, length).astype(np.int32)  # specials among normal pieces


@st.composite
def documents(
    draw,
    vocab_size: int,
    kinds=SENTENCE_KINDS,
    max_documents: int = 6,
    max_long_length: int = 3000,
) -> list[list[np.ndarray]]:
    """A group of documents (lists of 1-D int32 sentences) of any shape.

    Covers no documents, empty documents, empty sentences, 1-token documents, one very
    long sentence, and sentences of one repeated token or only special ids.
    """
    group = []
    for _ in range(draw(st.integers(0, max_documents))):
        num_sentences = draw(st.integers(0, 8))
        long_sentence = draw(st.booleans()) and num_sentences > 0
        kind = draw(st.sampled_from(kinds))
        seed = draw(st.integers(0, 2**32 - 1))
        long_length = draw(st.integers(24, max_long_length)) if long_sentence else None
        group.append(build_document(kind, seed, num_sentences, long_length, vocab_size))
    return group


def build_document(
    kind: str, seed: int, num_sentences: int, long_length: int | None, vocab_size: int
) -> list[np.ndarray]:
    """One document of `documents` from its draws (also for pinning a found case).

    ``num_sentences`` sentences of 0-23 tokens of ``kind``; with ``long_length`` one of
    them, picked at random, has that many tokens.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 24, num_sentences)
    if long_length is not None:
        lengths[rng.integers(num_sentences)] = long_length
    return [_sentence(kind, int(n), rng, vocab_size) for n in lengths]


@st.composite
def unique_token_documents(draw, max_documents: int = 6) -> list[list[np.ndarray]]:
    """Documents whose every token is distinct and counts up: the id says where it came from.

    Token ids are FIRST_NORMAL + (position in the whole group), so a segment's source
    document and offset can be read off its ids.
    """
    sizes = draw(
        st.lists(
            st.lists(st.integers(0, 30), max_size=10),
            max_size=max_documents,
        )
    )
    group, next_id = [], FIRST_NORMAL
    for sentence_lengths in sizes:
        document = []
        for length in sentence_lengths:
            document.append(np.arange(next_id, next_id + length, dtype=np.int32))
            next_id += length
        group.append(document)
    return group


def document_of_token(group: list[list[np.ndarray]]) -> dict[int, int]:
    """For `unique_token_documents`: token id -> index of its document."""
    return {int(t): d for d, document in enumerate(group) for s in document for t in s}
