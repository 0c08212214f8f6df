"""BERT's WordPiece tokenizer, for fine-tuning Hugging Face checkpoints that ship a vocab.txt.

Same semantics as ``transformers.BertTokenizer`` (the Rust tokenizer behind it): the
special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` written literally in the text are
kept whole (case-sensitive, as added tokens are), then the basic tokenizer (drop
control characters, whitespace-normalise, space out CJK characters, optionally
lower-case and strip accents, split off punctuation), then greedy
longest-match-first WordPiece with ``##`` continuation pieces; a word that cannot be
covered (an unassigned code point, say), or is longer than 100 characters, becomes
``[UNK]``. It offers the interface of `bert_jax.data.tokenizer.Tokenizer` that
fine-tuning uses (special ids, ``vocab_size``, ``encode``, ``decode``) plus character
offsets for span tasks.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata

import numpy as np

MAX_INPUT_CHARS_PER_WORD = 100
SPECIAL_PIECES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Unassigned code points (Cn) are not dropped: the Rust BertNormalizer's "other"
# categories are control, format, private use and surrogate, so they reach WordPiece
# and make their word [UNK].
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in _DROPPED_CATEGORIES


def _is_whitespace(ch: str) -> bool:
    # Rust's char::is_whitespace (Unicode White_Space); the line and paragraph separators
    # are its only members that are neither Zs nor dropped as control characters.
    return ch in " \t\n\r\u2028\u2029" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
    # BERT treats every non-alphanumeric ASCII symbol as punctuation ("$", "^", "`" ...).
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """WordPiece vocabulary (one piece per line of vocab.txt; the id is the line number).

    Attributes:
      pad_id, unk_id, cls_id, sep_id, mask_id: ids of [PAD], [UNK], [CLS], [SEP], [MASK].
      vocab_size: number of pieces.
      do_lower_case, strip_accents: the normalisation of the checkpoint.
    """

    def __init__(
        self,
        vocab_path: str,
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
    ):
        self.vocab_path = str(vocab_path)
        with open(self.vocab_path, encoding="utf-8") as f:
            pieces = [line.rstrip("\n") for line in f]
        self.pieces = pieces
        self.vocab = {piece: index for index, piece in enumerate(pieces)}
        self.vocab_size = len(pieces)
        self.do_lower_case = do_lower_case
        # Hugging Face: strip_accents None follows do_lower_case.
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        missing = [p for p in SPECIAL_PIECES if p not in self.vocab]
        if missing:
            raise ValueError(f"{self.vocab_path}: no special pieces {missing}")
        self._special_pattern = re.compile("|".join(re.escape(p) for p in SPECIAL_PIECES))
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]

    @classmethod
    def from_directory(cls, directory: str) -> WordPieceTokenizer:
        """The tokenizer of a Hugging Face checkpoint directory (vocab.txt + tokenizer_config)."""
        vocab_path = os.path.join(directory, "vocab.txt")
        if not os.path.exists(vocab_path):
            raise FileNotFoundError(f"{vocab_path} not found (WordPiece vocabulary)")
        settings = {}
        config_path = os.path.join(directory, "tokenizer_config.json")
        if os.path.exists(config_path):
            with open(config_path) as f:
                settings = json.load(f)
        return cls(
            vocab_path,
            do_lower_case=settings.get("do_lower_case", True),
            strip_accents=settings.get("strip_accents"),
            tokenize_chinese_chars=settings.get("tokenize_chinese_chars", True),
        )

    def _normalise(self, word: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Lower-cases / strips accents, keeping each output character's source index."""
        if self.do_lower_case:
            # Character by character, as the Rust BertNormalizer behind transformers'
            # BertTokenizer does (so a word-final 'Σ' becomes 'σ', not 'ς').
            word = [(low, origin) for ch, origin in word for low in ch.lower()]
        if self.strip_accents:
            word = [
                (ch, origin)
                for source, origin in word
                for ch in unicodedata.normalize("NFD", source)
                if unicodedata.category(ch) != "Mn"
            ]
        return word

    def _basic_tokens(self, text: str, begin: int, end: int) -> list[list[tuple[str, int]]]:
        """Basic tokens of ``text[begin:end]`` as lists of (normalised character, index)."""
        words, current = [], []
        for index in range(begin, end):
            ch = text[index]
            if ord(ch) in (0, 0xFFFD) or _is_control(ch):
                continue
            if _is_whitespace(ch):
                if current:
                    words.append(current)
                current = []
            elif self.tokenize_chinese_chars and _is_cjk(ch):
                if current:
                    words.append(current)
                words.append([(ch, index)])
                current = []
            else:
                current.append((ch, index))
        if current:
            words.append(current)
        tokens = []
        for word in words:
            current: list[tuple[str, int]] = []
            for ch, origin in self._normalise(word):
                if _is_punctuation(ch):  # every punctuation character is a token of its own
                    if current:
                        tokens.append(current)
                    tokens.append([(ch, origin)])
                    current = []
                else:
                    current.append((ch, origin))
            if current:
                tokens.append(current)
        return tokens

    def _wordpieces(self, token: list[tuple[str, int]]) -> list[tuple[int, int, int]]:
        """(id, start, end) in the source text of each piece of one basic token."""
        chars = "".join(ch for ch, _ in token)
        start_of = token[0][1]
        end_of = token[-1][1] + 1
        if len(chars) > MAX_INPUT_CHARS_PER_WORD:
            return [(self.unk_id, start_of, end_of)]
        out, start = [], 0
        while start < len(chars):
            end = len(chars)
            while end > start:
                piece = chars[start:end] if start == 0 else "##" + chars[start:end]
                if piece in self.vocab:
                    out.append((self.vocab[piece], token[start][1], token[end - 1][1] + 1))
                    break
                end -= 1
            if end == start:  # no piece matches: the whole word is unknown
                return [(self.unk_id, start_of, end_of)]
            start = end
        return out

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids and the [start, end) character span of each in ``text`` (int32 each)."""
        triples, begin = [], 0
        for special in [*self._special_pattern.finditer(text), None]:
            end = len(text) if special is None else special.start()
            for token in self._basic_tokens(text, begin, end):
                triples += self._wordpieces(token)
            if special is not None:
                triples.append((self.vocab[special.group()], special.start(), special.end()))
                begin = special.end()
        arrays = np.asarray(triples, np.int32).reshape(-1, 3)
        return arrays[:, 0].copy(), arrays[:, 1].copy(), arrays[:, 2].copy()

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``, int32 [num_tokens], no special tokens added."""
        return self.encode_with_offsets(text)[0]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(text) for text in texts]

    def id_to_piece(self, token_id: int) -> str:
        return self.pieces[int(token_id)]

    def decode(self, ids) -> str:
        """Pieces joined with spaces, ``##`` pieces glued on; [PAD] dropped."""
        words: list[str] = []
        for token_id in np.asarray(ids).reshape(-1):
            if int(token_id) == self.pad_id:
                continue
            piece = self.pieces[int(token_id)]
            if piece.startswith("##") and words:
                words[-1] += piece[2:]
            else:
                words.append(piece)
        return " ".join(words)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({self.vocab_path!r}, lower={self.do_lower_case})"
