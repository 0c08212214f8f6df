"""The one sentencepiece vocabulary shared by BERT, ALBERT and T5.

Id layout (fixed, see data_prep/train_tokenizer.py which produces it):
[PAD]=0, </s>=1, [UNK]=2, [CLS]=3, [SEP]=4, [MASK]=5, normal pieces from 6. T5 sentinels
`<extra_id_i>` live past the sentencepiece vocabulary: id = vocab_size - 1 - i.
"""

import os
import re

import numpy as np
import sentencepiece as spm

PAD_PIECE, EOS_PIECE, UNK_PIECE = "[PAD]", "</s>", "[UNK]"
CLS_PIECE, SEP_PIECE, MASK_PIECE = "[CLS]", "[SEP]", "[MASK]"
# The layout every objective and exported model relies on: piece -> id.
EXPECTED_SPECIAL_IDS = {
    PAD_PIECE: 0,
    EOS_PIECE: 1,
    UNK_PIECE: 2,
    CLS_PIECE: 3,
    SEP_PIECE: 4,
    MASK_PIECE: 5,
}
FIRST_NORMAL_ID = 6
WORD_START_MARKER = "▁"  # sentencepiece's U+2581 marks a piece that begins a word

# Abbreviations whose period must not end a sentence (each a fixed-width lookbehind).
_ABBREVIATIONS = ("Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Prof", "Gen", "Rev", "No", "vs")
_NOT_ABBREVIATION = "".join(rf"(?<!\b{a}\.)" for a in _ABBREVIATIONS)
_NOT_ABBREVIATION += r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\b[A-Z]\.)"  # single letters: initials
# A boundary is a newline, or whitespace after sentence-final punctuation (optionally closed by a
# quote/bracket) when an uppercase letter or an opening quote/bracket follows.
SENTENCE_BOUNDARY = re.compile(
    r"\s*\n\s*"
    rf"|(?:(?<=[.!?]){_NOT_ABBREVIATION}|(?<=[.!?][\"'”’)]))\s+(?=[\"'“‘(]?[A-Z])"
)


def split_sentences(text: str) -> list[str]:
    """Splits text on newlines and sentence-final punctuation; drops empty sentences."""
    return [s for s in (piece.strip() for piece in SENTENCE_BOUNDARY.split(text)) if s]


class Tokenizer:
    """Sentencepiece model with the BERT/T5 special-id layout checked at load time.

    Attributes:
      pad_id, eos_id, unk_id, cls_id, sep_id, mask_id: the special ids (0..5).
      model_path, extra_ids: the constructor arguments.
      spm_vocab_size: number of sentencepiece pieces (sentinels start here).
      vocab_size: spm_vocab_size + extra_ids (T5 sentinels).
      first_normal_id: 6; random replacement tokens come from [first_normal_id, spm size).
      word_start: bool [vocab_size], True where the piece starts a word or is special.
      special_ids: int32 ids never to be masked or corrupted.
    """

    def __init__(self, model_path: str, extra_ids: int = 0):
        self.model_path = str(model_path)
        self.extra_ids = int(extra_ids)
        self._load()

    def _load(self) -> None:
        if not os.path.exists(self.model_path):
            raise FileNotFoundError(
                f"Sentencepiece model {self.model_path!r} not found; run `make vocab` "
                "(builds data/c4_sample and trains data/vocab/spm.model)."
            )
        try:
            self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
        except RuntimeError as error:  # a directory, or not a model: sentencepiece's C++ status
            raise ValueError(
                f"Sentencepiece model {self.model_path!r} cannot be loaded ({error}); "
                "point config.data.vocab_path at a .model file from `make vocab`."
            ) from error
        self.spm_vocab_size = self._sp.get_piece_size()
        self._check_special_ids()
        self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
        self.cls_id, self.sep_id, self.mask_id = 3, 4, 5
        self.first_normal_id = FIRST_NORMAL_ID
        self.vocab_size = self.spm_vocab_size + self.extra_ids

        pieces = [self._sp.id_to_piece(i) for i in range(self.spm_vocab_size)]
        special = [
            self._sp.is_control(i) or self._sp.is_unknown(i) or i < FIRST_NORMAL_ID
            for i in range(self.spm_vocab_size)
        ]
        word_start = [
            p.startswith(WORD_START_MARKER) or s for p, s in zip(pieces, special, strict=True)
        ]
        self.word_start = np.array(word_start + [True] * self.extra_ids, dtype=bool)
        sentinels = range(self.spm_vocab_size, self.vocab_size)
        self.special_ids = np.array([*range(FIRST_NORMAL_ID), *sentinels], dtype=np.int32)

    def _check_special_ids(self) -> None:
        actual = {
            PAD_PIECE: self._sp.pad_id(),
            EOS_PIECE: self._sp.eos_id(),
            UNK_PIECE: self._sp.unk_id(),
            **{p: self._sp.piece_to_id(p) for p in (CLS_PIECE, SEP_PIECE, MASK_PIECE)},
        }
        found = {p: self._sp.id_to_piece(i) if i >= 0 else None for p, i in actual.items()}
        layout_ok = actual == EXPECTED_SPECIAL_IDS and all(p == found[p] for p in found)
        if not layout_ok or self._sp.bos_id() != -1:
            raise ValueError(
                f"Sentencepiece model {self.model_path!r} has special ids {actual} "
                f"(bos_id={self._sp.bos_id()}), expected {EXPECTED_SPECIAL_IDS} and no bos; "
                "train it with `python -m data_prep.train_tokenizer` (`make vocab`)."
            )

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, int32 [num_tokens], no special tokens added."""
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text in one sentencepiece call (faster than a Python loop)."""
        # One thread: per-document batches are small, and grain workers supply the parallelism.
        encoded = self._sp.encode(list(texts), num_threads=1)
        return [np.asarray(ids, dtype=np.int32) for ids in encoded]

    def encode_document(self, text: str) -> list[np.ndarray]:
        """Sentence-split `text`, then encode each sentence; sentences with no tokens dropped."""
        return [ids for ids in self.encode_batch(split_sentences(text)) if ids.size]

    def decode(self, ids) -> str:
        """Text of `ids`: [PAD] and </s> vanish, [CLS]/[SEP]/[MASK] and `<extra_id_i>` show."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        parts, run = [], []
        for token_id in ids:
            if token_id >= self.spm_vocab_size:
                parts += [self._sp.decode(run), f"<extra_id_{self.vocab_size - 1 - token_id}>"]
                run = []
            else:
                run.append(token_id)
        parts.append(self._sp.decode(run))
        return " ".join(part for part in parts if part)

    def id_to_piece(self, token_id: int) -> str:
        """The piece string of one id (sentinels as `<extra_id_i>`)."""
        if token_id >= self.spm_vocab_size:
            return f"<extra_id_{self.vocab_size - 1 - token_id}>"
        return self._sp.id_to_piece(int(token_id))

    def sentinel_id(self, i: int) -> int:
        """T5 sentinel `<extra_id_i>` = vocab_size - 1 - i."""
        if not 0 <= i < self.extra_ids:
            raise ValueError(f"sentinel {i} needs extra_ids > {i}, tokenizer has {self.extra_ids}")
        return self.vocab_size - 1 - i

    # Grain workers pickle the tokenizer: ship the path, reload the model on the other side.
    def __getstate__(self) -> dict:
        return {"model_path": self.model_path, "extra_ids": self.extra_ids}

    def __setstate__(self, state: dict) -> None:
        self.model_path = state["model_path"]
        self.extra_ids = state["extra_ids"]
        self._load()

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_path!r}, extra_ids={self.extra_ids}, size={self.vocab_size})"
