"""BERT's WordPiece tokenizer, for fine-tuning Hugging Face checkpoints that ship a vocab.txt.

Hugging Face ``tokenizers`` does the work, built as ``transformers.BertTokenizer``
builds it: ``BertNormalizer`` (drop control characters, whitespace-normalise, space
out CJK characters as Google's BasicTokenizer does, optionally lower-case and strip
accents), ``BertPreTokenizer`` (split on whitespace and punctuation), then greedy
longest-match-first ``WordPiece`` with ``##`` continuation pieces; a word that cannot
be covered (an unassigned code point, say), or is longer than 100 characters, becomes
``[UNK]``. The special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` written literally in
the text are kept whole (case-sensitive, as added tokens are). This class gives it the
interface of `bert_jax.data.tokenizer.Tokenizer` that fine-tuning uses (special ids,
``vocab_size``, ``encode``, ``decode``) plus character offsets for span tasks.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

MAX_INPUT_CHARS_PER_WORD = 100
SPECIAL_PIECES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceTokenizer:
    """WordPiece vocabulary (one piece per line of vocab.txt; the id is the line number).

    Attributes:
      pad_id, unk_id, cls_id, sep_id, mask_id: ids of [PAD], [UNK], [CLS], [SEP], [MASK].
      vocab_size: number of pieces.
      vocab: piece -> id; pieces: id -> piece.
      do_lower_case, strip_accents, tokenize_chinese_chars: the normalisation of the
        checkpoint (strip_accents None follows do_lower_case, as in Hugging Face).
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
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        missing = [p for p in SPECIAL_PIECES if p not in self.vocab]
        if missing:
            raise ValueError(f"{self.vocab_path}: no special pieces {missing}")
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]
        self._tokenizer = self._build()

    def _build(self) -> tokenizers.Tokenizer:
        model = models.WordPiece(
            self.vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD
        )
        tokenizer = tokenizers.Tokenizer(model)
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=self.tokenize_chinese_chars,
            strip_accents=self.strip_accents,
            lowercase=self.do_lower_case,
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        # No clean-up: "it ' s" stays as the pieces say (transformers cleans it to "it's").
        tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        special = [tokenizers.AddedToken(piece, special=True) for piece in SPECIAL_PIECES]
        tokenizer.add_special_tokens(special)
        return tokenizer

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

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids and the [start, end) character span of each in ``text`` (int32 each)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        offsets = np.asarray(encoding.offsets, np.int32).reshape(-1, 2)
        return np.asarray(encoding.ids, np.int32), offsets[:, 0].copy(), offsets[:, 1].copy()

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``, int32 [num_tokens], no special tokens added."""
        return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(encoding.ids, np.int32) for encoding in encodings]

    def id_to_piece(self, token_id: int) -> str:
        return self.pieces[int(token_id)]

    def decode(self, ids) -> str:
        """Pieces joined with spaces, ``##`` pieces glued on; [PAD] dropped."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) != self.pad_id]
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({self.vocab_path!r}, lower={self.do_lower_case})"
