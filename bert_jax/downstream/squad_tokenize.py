"""SQuAD context tokens with character offsets, optionally cut at the gold answer's edges.

A training window is labelled with the tokens that cover the gold answer. When an
answer edge falls inside a piece ('Father Julius Nieuwl' ends inside 'land' of
'▁Ni e u w land') that label covers more text than the answer, and even a perfect
model cannot reproduce the gold string. A unigram-LM sentencepiece model does not
have a single segmentation, though: it segments each whitespace-delimited word on
its own and scores every segmentation. So for a word that straddles an answer edge
we take the best-scoring of its n-best segmentations that has a piece boundary
there (the kind of segmentation subword regularisation trains on) and splice it in
place of the word's pieces. Only training features may do this: evaluation
features must not depend on the answer. WordPiece (greedy longest match, no
alternatives) keeps BERT's tokenization and its covering spans.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

NBEST_SIZE = 64  # segmentations searched for one with the required piece boundary

# (ids, begins, ends): piece ids and each piece's [begin, end) character span.
Pieces = tuple[np.ndarray, np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=4)
def sentencepiece_processor(model_path: str):
    """The (cached) `SentencePieceProcessor` of a model file."""
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=model_path)


def encode_with_offsets(tokenizer, text: str, boundaries: Iterable[int] = ()) -> Pieces:
    """Token ids of ``text`` and each token's [start, end) character span in it.

    Spans skip leading whitespace (sentencepiece's '▁' covers the space before a
    word); a token that covers no character (a byte-fallback piece, a lone '▁')
    takes the span of the token after it. Works with `WordPieceTokenizer` (its own
    offsets) and the sentencepiece `Tokenizer` (via ``model_path``).

    Args:
      tokenizer: a `Tokenizer` (sentencepiece) or anything with ``encode_with_offsets``.
      text: the text to tokenize.
      boundaries: character positions that must be token boundaries (the gold
        answer's start and end, for training features only). Sentencepiece words
        straddling one are re-segmented (`best_segmentation_with_cuts`); a word with
        no such segmentation keeps its pieces (logged). Ignored for WordPiece.
    """
    if hasattr(tokenizer, "encode_with_offsets"):
        ids, starts, ends = tokenizer.encode_with_offsets(text)
    else:
        processor = sentencepiece_processor(tokenizer.model_path)
        pieces = _piece_offsets(processor.encode(text, return_type="proto").pieces, text)
        for (word_start, word_end), cuts in _words_to_cut(text, boundaries).items():
            pieces = _resegment_word(processor, text, word_start, word_end, cuts, pieces)
        ids, starts, ends = pieces
    return _tidy_offsets(text, np.asarray(ids, np.int32), starts, ends)


def best_segmentation_with_cuts(
    processor, word: str, cuts: Sequence[int], nbest_size: int = NBEST_SIZE
) -> Pieces | None:
    """Highest-scoring segmentation of ``word`` with a piece boundary at each cut.

    ``word`` is encoded as it stands after whitespace or at the start of a text,
    i.e. with sentencepiece's '▁' dummy prefix on its first piece.

    Args:
      processor: a unigram `SentencePieceProcessor`.
      word: one whitespace-delimited word.
      cuts: character positions strictly inside ``word``.
      nbest_size: how many of the best segmentations to search.

    Returns:
      Piece ids and [begin, end) character spans within ``word``, or None when
      none of the ``nbest_size`` best segmentations has all the cuts.
    """
    nbest = processor.nbest_encode(word, nbest_size=nbest_size, return_type="proto").nbests
    for segmentation in nbest:  # best score first
        ids, begins, ends = _piece_offsets(segmentation.pieces, word)
        if set(cuts) <= set(ends.tolist()):
            return ids, begins, ends
    return None


def _piece_offsets(pieces, text: str) -> Pieces:
    """Ids and character spans of sentencepiece proto pieces (which report UTF-8 bytes)."""
    char_lengths = [len(ch.encode("utf-8")) for ch in text]
    char_at_byte = np.append(np.repeat(np.arange(len(text)), char_lengths), len(text))
    ids = np.array([p.id for p in pieces], np.int32)
    begins = char_at_byte[np.array([p.begin for p in pieces], np.int64)].astype(np.int32)
    ends = char_at_byte[np.array([p.end for p in pieces], np.int64)].astype(np.int32)
    return ids, begins, ends


def _words_to_cut(text: str, boundaries: Iterable[int]) -> dict[tuple[int, int], list[int]]:
    """Word-relative cuts of each whitespace-delimited word that has a boundary inside it."""
    words: dict[tuple[int, int], list[int]] = {}
    for position in sorted(set(boundaries)):
        around = text[max(position - 1, 0) : position + 1]
        if not 0 < position < len(text) or any(ch.isspace() for ch in around):
            continue  # a text or word edge is a token boundary already
        start, end = position, position
        while start > 0 and not text[start - 1].isspace():
            start -= 1
        while end < len(text) and not text[end].isspace():
            end += 1
        words.setdefault((start, end), []).append(position - start)
    return words


def _resegment_word(
    processor, text: str, word_start: int, word_end: int, cuts: list[int], pieces: Pieces
) -> Pieces:
    """``pieces`` of ``text`` with the word's pieces replaced by a segmentation with the cuts."""
    ids, begins, ends = pieces
    if set(cuts) <= {end - word_start for end in ends.tolist()}:
        return pieces  # already piece boundaries
    word = text[word_start:word_end]
    # A word's first piece begins at the whitespace before it (its '▁'), so the word's
    # pieces are those beginning after the previous word's last character.
    first = int(np.searchsorted(begins, len(text[:word_start].rstrip()), "left"))
    last = int(np.searchsorted(begins, word_end, "left"))
    if processor.encode(word) != ids[first:last].tolist():
        log.warning("%r is segmented differently on its own; keeping its pieces", word)
        return pieces
    forced = best_segmentation_with_cuts(processor, word, cuts)
    if forced is None:
        log.warning(
            "none of the %d best segmentations of %r has piece boundaries at %s; "
            "the gold span covers whole pieces",
            NBEST_SIZE,
            word,
            cuts,
        )
        return pieces
    word_ids, word_begins, word_ends = forced
    return (
        np.concatenate([ids[:first], word_ids, ids[last:]]),
        np.concatenate([begins[:first], word_begins + word_start, begins[last:]]),
        np.concatenate([ends[:first], word_ends + word_start, ends[last:]]),
    )


def _tidy_offsets(text: str, ids: np.ndarray, starts, ends) -> Pieces:
    """Spans without leading whitespace; empty spans take the next token's span."""
    starts, ends = np.array(starts, np.int32), np.array(ends, np.int32)
    for i in range(len(ids)):
        while starts[i] < ends[i] and text[starts[i]].isspace():
            starts[i] += 1
    following = (len(text), len(text))
    for i in reversed(range(len(ids))):
        if starts[i] >= ends[i]:
            starts[i], ends[i] = following
        following = (starts[i], ends[i])
    return ids, starts, ends
