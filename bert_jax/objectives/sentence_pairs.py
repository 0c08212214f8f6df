"""Sentence pairs (segment A, segment B, label) for next-sentence and sentence-order prediction.

Semantics of `create_instances_from_document` in google-research/bert and google-research/albert
`create_pretraining_data.py`, rewritten over NumPy token arrays:

- Each document gets a target length: `max_num_tokens`, or with probability `short_seq_prob` a
  uniform integer in [2, max_num_tokens].
- Whole sentences are accumulated into a chunk until it reaches the target length (or the
  document ends). A random `a_end` in [1, sentences_in_chunk - 1] splits the chunk into A and B.
- 'nsp' (BERT): with probability 0.5, or always when the chunk holds a single sentence, B is
  replaced by text from a random *other* document of the group (random start sentence, whole
  sentences until the target length is reached; label 1), and the chunk sentences after A are
  "put back" so the next chunk starts right after A.
- 'sop' (ALBERT): A and B are consecutive segments of the same document, swapped with
  probability 0.5 (label 1).
  With `both_orders` (held-out evaluation) every consecutive pair is emitted twice, as (A, B, 0)
  and (B, A, 1), truncated once so both orders hold the same text: labels are exactly balanced
  and no pair's score depends on a coin flip.
- 'none': A and B consecutive, label 0.
- Pairs longer than `max_num_tokens` are truncated as `truncate_seq_pair`: one token at a time
  from the longer segment (B on ties), from the front or the back with probability 0.5 each.

Where this deliberately departs from the originals:
- 'sop' / 'none' drop a chunk that holds a single sentence. ALBERT instead takes B from a random
  document and labels it 1 (a leftover of NSP); that would contradict the sentence-order task
  (B from another document, "swapped" label) and skew the labels towards 1.
- 'nsp' with a group of a single (non-empty) document cannot draw a random next: multi-sentence
  chunks then always use the actual next (label 0) and single-sentence chunks are dropped. BERT
  would silently take "random" text from the same document and label it 1. Use a
  `docs_per_group` > 1 so this stays a corner case (the last group of a shard).
- The random document is drawn uniformly among the *other* documents; BERT retries 10 times and
  may, with probability (1/num_docs)^10, fall back to the same document.
- Empty documents and empty sentences are skipped.
"""

import bisect
import itertools
from typing import NamedTuple

import numpy as np

SENTENCE_PAIR_TASKS = ("nsp", "sop", "none")

# (tokens_a, tokens_b, label); label 1 = random next (NSP) or swapped (SOP).
SegmentPair = tuple[np.ndarray, np.ndarray, int]


class _PackedDocument(NamedTuple):
    tokens: np.ndarray  # [document_tokens] all sentences concatenated
    # [sentences + 1] sentence k is tokens[offsets[k]:offsets[k + 1]]; a list, because
    # `bisect` on Python ints is ~10x faster than np.searchsorted for one scalar query.
    offsets: list[int]


def _pack_document(document, document_index: int) -> _PackedDocument | None:
    sentences = [np.asarray(sentence) for sentence in document]
    for sentence_index, sentence in enumerate(sentences):
        if sentence.ndim != 1:
            raise ValueError(
                f"document {document_index}, sentence {sentence_index}: expected a 1-D array of "
                f"token ids, got shape {sentence.shape}"
            )
    lengths = [len(sentence) for sentence in sentences]
    if not any(lengths):
        return None
    # Empty sentences add nothing to the tokens; their offsets go (they hold no sentence).
    offsets = [0, *itertools.accumulate(length for length in lengths if length)]
    return _PackedDocument(np.concatenate(sentences).astype(np.int32, copy=False), offsets)


def _chunk_end(offsets: list[int], start: int, target_length: int) -> int:
    """First sentence index after a chunk that starts at `start` and reaches `target_length`.

    Like the original loop, the chunk always takes at least one sentence and stops at the first
    sentence that brings it to `target_length` tokens or at the end of the document.
    """
    end = bisect.bisect_left(offsets, offsets[start] + target_length)
    return min(max(end, start + 1), len(offsets) - 1)


def _pairs_from_document(
    documents: list[_PackedDocument],
    document_index: int,
    rng: np.random.Generator,
    max_num_tokens: int,
    short_seq_prob: float,
    task: str,
    pairs: list[SegmentPair],
    both_orders: bool = False,
) -> None:
    document = documents[document_index]
    tokens, offsets = document
    num_sentences = len(offsets) - 1
    can_draw_random_next = task == "nsp" and len(documents) > 1

    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = int(rng.integers(2, max_num_tokens, endpoint=True))

    start = 0
    while start < num_sentences:
        end = _chunk_end(offsets, start, target_length)
        chunk_sentences = end - start
        if chunk_sentences == 1 and not can_draw_random_next:
            start = end  # no B can be formed without another document
            continue
        a_end = start + 1
        if chunk_sentences >= 2:
            a_end = start + int(rng.integers(1, chunk_sentences))
        tokens_a = tokens[offsets[start] : offsets[a_end]]
        next_start = end

        if can_draw_random_next and (chunk_sentences == 1 or rng.random() < 0.5):
            other_index = int(rng.integers(len(documents) - 1))
            other_index += other_index >= document_index  # any document but this one
            other_tokens, other_offsets = documents[other_index]
            b_start = int(rng.integers(len(other_offsets) - 1))
            b_end = _chunk_end(other_offsets, b_start, target_length - len(tokens_a))
            tokens_b = other_tokens[other_offsets[b_start] : other_offsets[b_end]]
            label = 1
            next_start = a_end  # the unused sentences of this chunk are "put back"
        else:
            tokens_b = tokens[offsets[a_end] : offsets[end]]
            label = 0
            if task == "sop" and not both_orders and rng.random() < 0.5:
                tokens_a, tokens_b = tokens_b, tokens_a
                label = 1
        pairs.append((tokens_a, tokens_b, label))
        start = next_start


def truncation_counts(
    length_a: np.ndarray, length_b: np.ndarray, max_num_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens that `truncate_seq_pair` removes from A and from B, in closed form.

    The original removes one token at a time from the longer segment (B on ties) until the pair
    fits: first the longer one shrinks to the length of the shorter, then they alternate
    starting with B.

    Returns:
      (removed_from_a, removed_from_b), each shaped like the inputs.
    """
    excess = np.maximum(length_a + length_b - max_num_tokens, 0)
    gap = length_a - length_b
    removed_a = np.minimum(excess, np.maximum(gap, 0))
    removed_b = np.minimum(excess, np.maximum(-gap, 0))
    alternating = excess - removed_a - removed_b
    return removed_a + alternating // 2, removed_b + (alternating + 1) // 2


def _truncate_pairs(
    pairs: list[SegmentPair], max_num_tokens: int, rng: np.random.Generator
) -> list[SegmentPair]:
    length_a = np.array([len(a) for a, _, _ in pairs], np.int64)
    length_b = np.array([len(b) for _, b, _ in pairs], np.int64)
    removed_a, removed_b = truncation_counts(length_a, length_b, max_num_tokens)
    # Each removed token comes from the front with probability 0.5, independently, so how many
    # come from the front is binomial; what remains is one contiguous slice.
    front_a = rng.binomial(removed_a, 0.5)
    front_b = rng.binomial(removed_b, 0.5)
    end_a = length_a - (removed_a - front_a)
    end_b = length_b - (removed_b - front_b)
    for index in np.flatnonzero(removed_a + removed_b):
        a, b, label = pairs[index]
        pairs[index] = (a[front_a[index] : end_a[index]], b[front_b[index] : end_b[index]], label)
    return pairs


def create_segment_pairs(
    documents: list[list[np.ndarray]],
    rng: np.random.Generator,
    *,
    max_num_tokens: int,
    short_seq_prob: float,
    task: str,
    both_orders: bool = False,
) -> list[SegmentPair]:
    """Cuts a group of documents into (tokens_a, tokens_b, label) pairs.

    Args:
      documents: documents of the group, each a list of sentences, each a 1-D array of token ids.
        Random-next segments for 'nsp' are drawn from the other documents of the group.
      rng: the only source of randomness; same state -> same pairs.
      max_num_tokens: most tokens of A plus B (max_seq_length - 3 for [CLS] A [SEP] B [SEP]).
      short_seq_prob: probability that a document uses a random shorter target length.
      task: 'nsp' (BERT next sentence), 'sop' (ALBERT sentence order) or 'none' (label 0).
      both_orders: 'sop' only: emit each consecutive pair in both orders instead of swapping
        with probability 0.5 (balanced held-out sets).

    Returns:
      Pairs in document order. A and B are non-empty int32 arrays (slices of a per-document
      copy) with len(A) + len(B) <= max_num_tokens; label 1 = random next ('nsp') or swapped
      ('sop').
    """
    if task not in SENTENCE_PAIR_TASKS:
        raise ValueError(f"task must be one of {SENTENCE_PAIR_TASKS}, got {task!r}")
    if max_num_tokens < 2:
        raise ValueError(
            f"max_num_tokens must be >= 2 (one token each for A and B), got {max_num_tokens}"
        )
    packed = [_pack_document(document, index) for index, document in enumerate(documents)]
    packed = [document for document in packed if document is not None]
    pairs: list[SegmentPair] = []
    for document_index in range(len(packed)):
        _pairs_from_document(
            packed, document_index, rng, max_num_tokens, short_seq_prob, task, pairs, both_orders
        )
    if not pairs:
        return pairs
    pairs = _truncate_pairs(pairs, max_num_tokens, rng)
    if task == "sop" and both_orders:
        # Swapped twins are made after truncation, so both orders hold exactly the same text.
        pairs = [twin for a, b, _ in pairs for twin in ((b, a, 1), (a, b, 0))]
    return pairs


def build_bert_inputs(
    pairs: list[SegmentPair], *, cls_id: int, sep_id: int, max_seq_length: int
) -> dict[str, np.ndarray]:
    """Lays pairs out as `[CLS] A [SEP] B [SEP]`, padded with 0 ([PAD]) to `max_seq_length`.

    Args:
      pairs: (tokens_a, tokens_b, label) with len(A) + len(B) + 3 <= max_seq_length.
      cls_id: id of [CLS].
      sep_id: id of [SEP].
      max_seq_length: L, the fixed length of every row.

    Returns:
      dict of int32 [N, L] arrays: input_ids, input_mask (1 real, 0 pad), segment_ids (0 for
      [CLS] A [SEP], 1 for B [SEP], 0 on padding).
    """
    num_pairs = len(pairs)
    length_a = np.array([len(a) for a, _, _ in pairs], np.int64).reshape(num_pairs)
    length_b = np.array([len(b) for _, b, _ in pairs], np.int64).reshape(num_pairs)
    total_length = length_a + length_b + 3  # [N]
    too_long = np.flatnonzero(total_length > max_seq_length)
    if too_long.size:
        index = int(too_long[0])
        raise ValueError(
            f"pair {index} needs {total_length[index]} tokens with [CLS]/[SEP], more than "
            f"max_seq_length={max_seq_length}"
        )

    input_ids = np.zeros((num_pairs, max_seq_length), np.int32)
    segments = [segment for a, b, _ in pairs for segment in (a, b)]
    if segments:
        flat_tokens = np.concatenate(segments)  # [total A and B tokens]
        segment_lengths = np.stack([length_a, length_b], axis=1).reshape(-1)  # [2N]: A0 B0 A1 ...
        first_column = np.stack([np.ones_like(length_a), length_a + 2], axis=1).reshape(-1)  # [2N]
        first_flat = np.cumsum(segment_lengths) - segment_lengths  # [2N]
        rows = np.repeat(np.arange(num_pairs).repeat(2), segment_lengths)
        columns = np.arange(len(flat_tokens)) - np.repeat(
            first_flat - first_column, segment_lengths
        )
        input_ids[rows, columns] = flat_tokens
    row_index = np.arange(num_pairs)
    input_ids[:, 0] = cls_id
    input_ids[row_index, length_a + 1] = sep_id
    input_ids[row_index, total_length - 1] = sep_id

    column = np.arange(max_seq_length)  # [L]
    is_real = column < total_length[:, None]  # [N, L]
    is_segment_b = (column >= (length_a + 2)[:, None]) & is_real
    return {
        "input_ids": input_ids,
        "input_mask": is_real.astype(np.int32),
        "segment_ids": is_segment_b.astype(np.int32),
    }
