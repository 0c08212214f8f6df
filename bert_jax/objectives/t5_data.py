"""T5 pretraining objectives (Raffel et al. 2019, section 3.3): the data half (NumPy).

Every objective of the paper's comparison is one `denoise` transform configured by a
noise mask ('spans' | 'iid' | 'prefix'), a density, an inputs function and a targets
function (see `span_corruption.py`); `PRESETS` names the paper's rows (and `ALIASES` the
T5 gin file names), `T5DataConfig` is what they fill in, so a run config says
`objective.name` plus overrides:

  span_corruption     T5's final objective: random spans, 15%, mean span 3, unique sentinels
  iid_replace_spans   the paper's baseline: i.i.d. 15%, each corrupted run -> one sentinel
  bert_style          i.i.d. 15%; 90% -> sentinel, 10% -> random token; target = original
  mass_style          i.i.d. 15% -> sentinel; target = original
  drop_tokens         i.i.d. 15% dropped from the inputs; target = the dropped tokens
  prefix_lm           split at a uniform point: inputs = prefix, target = the rest
  deshuffling         inputs = all tokens shuffled; target = original
  iid_{10,25,50}_u_u, span_{2,3,5,10}_15_u_u   the corruption-rate and span-length rows
  (the T5 gin file names iid_15_u_u, iid_15_r10s90_f, ... are accepted as aliases)

Documents to examples follows T5's select_random_chunk -> reduce_concat_tokens ->
split_tokens -> denoise, with the concatenation done over the group of documents the
pipeline hands us (`config.data.docs_per_group`) instead of T5's 128 shuffled documents:
each document is cut to one random aligned chunk of at most 65536 tokens, the group is
concatenated without separators (prefix_lm and deshuffling keep documents apart, as their
gin files do), and split into chunks of `tokens_length` raw tokens; the group's last
chunk is shorter, and packing fills the room it leaves. The full chunks of a group are
denoised together as 2-D arrays (`denoise_rows.py`), with the random draws of the
chunk-by-chunk code, so the examples are the same.

One file, over 300 lines: the presets, the config they fill in and the example builder
that reads it are one objective family, read together.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from bert_jax.data import packing
from bert_jax.objectives import denoise_rows, span_corruption

__all__ = ["ALIASES", "PRESETS", "T5DataConfig", "T5Objective"]

logger = logging.getLogger(__name__)

_SPANS_U_U = {
    "noise_mask": "spans",
    "inputs_fn": "noise_span_to_unique_sentinel",
    "targets_fn": "nonnoise_span_to_unique_sentinel",
}
_IID_U_U = {**_SPANS_U_U, "noise_mask": "iid"}

PRESETS: dict[str, dict] = {
    "span_corruption": {**_SPANS_U_U, "noise_density": 0.15, "mean_noise_span_length": 3.0},
    "iid_replace_spans": {**_IID_U_U, "noise_density": 0.15},
    "bert_style": {
        "noise_mask": "iid",
        "noise_density": 0.15,
        "inputs_fn": "noise_token_to_random_token_or_sentinel",
        "random_token_prob": 0.1,
        "targets_fn": None,
    },
    "mass_style": {
        "noise_mask": "iid",
        "noise_density": 0.15,
        "inputs_fn": "noise_token_to_sentinel",
        "targets_fn": None,
    },
    "drop_tokens": {
        "noise_mask": "iid",
        "noise_density": 0.15,
        "inputs_fn": "drop_noise_tokens",
        "targets_fn": "drop_nonnoise_tokens",
    },
    "prefix_lm": {
        "noise_mask": "prefix",
        "noise_density": 0.5,
        "inputs_fn": "drop_nonnoise_tokens",  # the noise is the prefix
        "targets_fn": "drop_noise_tokens",
        "concat_documents": False,
    },
    "deshuffling": {
        "noise_mask": "iid",
        "noise_density": 1.0,
        "inputs_fn": "permute_noise_tokens",
        "targets_fn": None,
        "concat_documents": False,
    },
    **{f"iid_{rate}_u_u": {**_IID_U_U, "noise_density": rate / 100} for rate in (10, 25, 50)},
    **{
        f"span_{span}_15_u_u": {**_SPANS_U_U, "noise_density": 0.15, "mean_noise_span_length": span}
        for span in (2, 3, 5, 10)
    },
}
ALIASES = {
    "t5": "span_corruption",
    "iid_15_u_u": "iid_replace_spans",
    "iid_15_r10s90_f": "bert_style",
    "iid_15_m_f": "mass_style",
    "iid_15_d_d": "drop_tokens",
    "all_permute": "deshuffling",
}
NOISE_MASKS = ("spans", "iid", "prefix")
_FULL_TARGETS = (None, "", "none", "full", "original")  # spellings of "the original text"
_OVERRIDABLE = (
    "noise_mask", "noise_density", "mean_noise_span_length", "inputs_fn", "targets_fn",
    "random_token_prob", "targets_length", "pack", "concat_documents", "num_packing_bins",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class T5DataConfig:
    """How documents become T5 examples. Build with `preset()` or `from_config()`.

    Attributes:
        inputs_length: encoder length (config.data.max_seq_length), EOS included.
        noise_mask: 'spans' (random spans), 'iid' or 'prefix' (prefix LM split).
        noise_density: fraction of tokens that are noise (unused by 'prefix': a uniform split).
        mean_noise_span_length: for 'spans'; None or 0 means i.i.d. noise instead.
        inputs_fn / targets_fn: names in `span_corruption.NOISE_FUNCTIONS`; a targets_fn of
            None means the original text.
        random_token_prob: for noise_token_to_random_token_or_sentinel.
        targets_length: decoder length; None derives it (exact for spans, else the
            99.9th percentile of the simulated target length, rounded up to 8).
        pack: pack several examples per row (t5x style) instead of padding each.
        concat_documents: concatenate the group's documents before splitting.
    """

    inputs_length: int = 512
    name: str = "span_corruption"
    noise_mask: str = "spans"
    noise_density: float = 0.15
    mean_noise_span_length: float | None = 3.0
    inputs_fn: str = "noise_span_to_unique_sentinel"
    targets_fn: str | None = "nonnoise_span_to_unique_sentinel"
    random_token_prob: float = 0.1
    targets_length: int | None = None
    pack: bool = True
    concat_documents: bool = True
    num_packing_bins: int = packing.DEFAULT_NUM_PACKING_BINS

    def __post_init__(self):
        where = "T5DataConfig (config.objective)"
        if self.noise_mask == "spans" and not self.mean_noise_span_length:
            object.__setattr__(self, "noise_mask", "iid")
        if self.targets_fn in _FULL_TARGETS:
            object.__setattr__(self, "targets_fn", None)
        if self.noise_mask not in NOISE_MASKS:
            raise ValueError(f"{where}: noise_mask={self.noise_mask!r} not in {NOISE_MASKS}")
        for field in ("inputs_fn", "targets_fn"):
            value = getattr(self, field)
            if value is not None and value not in span_corruption.NOISE_FUNCTIONS:
                raise ValueError(
                    f"{where}: {field}={value!r} not in {sorted(span_corruption.NOISE_FUNCTIONS)}"
                )
        if not 0.0 < self.noise_density <= 1.0:
            raise ValueError(f"{where}: noise_density={self.noise_density} not in (0, 1]")
        if self.inputs_length < 4:
            raise ValueError(f"{where}: inputs_length={self.inputs_length} is too short")

    @classmethod
    def preset(cls, name: str, inputs_length: int, **overrides) -> T5DataConfig:
        """The named paper objective at an encoder length, with optional field overrides."""
        canonical = ALIASES.get(name, name)
        if canonical not in PRESETS:
            known = sorted(PRESETS) + sorted(ALIASES)
            raise ValueError(f"config.objective.name={name!r} is not a T5 objective: {known}")
        fields = {**PRESETS[canonical], **overrides}
        return cls(inputs_length=inputs_length, name=canonical, **fields)

    @classmethod
    def from_config(cls, config) -> T5DataConfig:
        """From the run config: data.max_seq_length, objective.name and its overrides.

        Objective fields that are None keep the preset's value (configs/t5.py has them all).
        """
        objective = config.objective
        missing = [field for field in _OVERRIDABLE if field not in objective]
        if missing:
            raise ValueError(f"config.objective lacks {missing}: start from configs/t5.py")
        overrides = {
            field: objective[field] for field in _OVERRIDABLE if objective[field] is not None
        }
        return cls.preset(objective.name, int(config.data.max_seq_length), **overrides)


# Sentinels (or none) each function adds per span, for T5's exact length helper.
_EXTRA_PER_SPAN_INPUTS = {"noise_span_to_unique_sentinel": 1, "noise_span_to_sentinel": 1}
_EXTRA_PER_SPAN_INPUTS["drop_noise_tokens"] = 0
_EXTRA_PER_SPAN_TARGETS = {"nonnoise_span_to_unique_sentinel": 1, "nonnoise_span_to_sentinel": 1}
_EXTRA_PER_SPAN_TARGETS["drop_nonnoise_tokens"] = 0
MAX_DOCUMENT_TOKENS = 65536  # T5's select_random_chunk max_length


class T5Objective:
    """Documents -> variable-length {'inputs', 'targets'} examples; finalize() pads or packs."""

    def __init__(self, data_config: T5DataConfig, tokenizer):
        self.config = data_config
        self.vocab = span_corruption.DenoisingVocab.from_tokenizer(tokenizer)
        self.eos_id = int(tokenizer.eos_id)
        self.inputs_length = data_config.inputs_length
        self._inputs_fn = span_corruption.NOISE_FUNCTIONS[data_config.inputs_fn]
        if data_config.inputs_fn == "noise_token_to_random_token_or_sentinel":
            self._inputs_fn = functools.partial(
                self._inputs_fn, random_prob=data_config.random_token_prob
            )
        self._targets_fn = (
            None
            if data_config.targets_fn is None
            else span_corruption.NOISE_FUNCTIONS[data_config.targets_fn]
        )
        self.tokens_length, self.targets_length = self._plan_lengths()

    def _noise_mask(self, length: int, rng: np.random.Generator) -> np.ndarray:
        config = self.config
        if config.noise_mask == "spans":
            return span_corruption.random_spans_noise_mask(
                length, config.noise_density, config.mean_noise_span_length, rng
            )
        if config.noise_mask == "prefix":
            return span_corruption.prefix_noise_mask(length, rng)
        return span_corruption.iid_noise_mask(length, config.noise_density, rng)

    def _plan_lengths(self) -> tuple[int, int]:
        """(raw tokens per chunk, targets length) so examples fit the encoder and decoder."""
        config = self.config
        extra_inputs = _EXTRA_PER_SPAN_INPUTS.get(config.inputs_fn)
        extra_targets = _EXTRA_PER_SPAN_TARGETS.get(config.targets_fn)
        if config.noise_mask == "spans" and extra_inputs is not None and extra_targets is not None:
            tokens_length, targets_length = span_corruption.span_corruption_lengths(
                self.inputs_length,
                config.noise_density,
                config.mean_noise_span_length,
                extra_inputs,
                extra_targets,
            )
        else:
            # No function makes inputs longer than its chunk, so inputs_length - 1 raw tokens
            # (T5's split_tokens_to_inputs_length) always fit with EOS.
            tokens_length = self.inputs_length - 1
            targets_length = self._simulated_targets_length(tokens_length)
        if config.targets_length:
            targets_length = int(config.targets_length)
        return tokens_length, targets_length

    def _simulated_targets_length(self, tokens_length: int) -> int:
        """99.9th percentile of the encoded targets (+EOS) over fixed-seed random masks.

        Examples beyond it are cut to fit (`_cut_to_fit`), so it trades padding for rare cuts.
        """
        if self.config.targets_fn is None:
            return tokens_length + 1
        rng = np.random.default_rng(0)
        masks = [self._noise_mask(tokens_length, rng) for _ in range(1000)]
        lengths = [
            span_corruption.encoded_token_counts(self.config.targets_fn, m).sum() + 1 for m in masks
        ]
        most_spans = max(int(m[0]) + int(np.sum(m[1:] & ~m[:-1])) for m in masks)
        if "unique" in self.config.inputs_fn and most_spans > len(self.vocab.sentinel_ids):
            logger.warning(
                "T5 objective %s: up to %d noise spans per example but %d sentinels; "
                "later spans reuse the last sentinel",
                self.config.name,
                most_spans,
                len(self.vocab.sentinel_ids),
            )
        quantile = int(np.ceil(np.quantile(lengths, 0.999)))
        return min(-(-quantile // 8) * 8, tokens_length + 1)

    def _cut_to_fit(self, tokens: np.ndarray, noise_mask: np.ndarray):
        """The longest prefix of a chunk whose encoded inputs and targets fit (rarely needed)."""
        inputs_so_far = np.cumsum(
            span_corruption.encoded_token_counts(self.config.inputs_fn, noise_mask)
        )
        targets_so_far = np.cumsum(
            span_corruption.encoded_token_counts(self.config.targets_fn, noise_mask)
        )
        keep = min(
            np.searchsorted(inputs_so_far, self.inputs_length - 1, side="right"),  # room for EOS
            np.searchsorted(targets_so_far, self.targets_length - 1, side="right"),
        )
        return tokens[:keep], noise_mask[:keep]

    def _corrupt(self, tokens, noise_mask, rng):
        inputs = self._inputs_fn(tokens, noise_mask, self.vocab, rng)
        if self._targets_fn is None:
            return inputs, tokens
        return inputs, self._targets_fn(tokens, noise_mask, self.vocab, rng)

    def denoise(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One raw chunk -> {'inputs', 'targets'}: int32 1-D, each ending with EOS."""
        return self._denoise_with_mask(tokens, self._noise_mask(len(tokens), rng), rng)

    def _denoise_rows(self, chunks: np.ndarray, rng: np.random.Generator) -> list[dict]:
        """Equal-length chunks [count, length] -> `denoise` of each, in one pass of 2-D NumPy
        where the objective's functions draw no random numbers (else chunk by chunk)."""
        config = self.config
        functions = (config.inputs_fn, config.targets_fn)
        if config.noise_mask not in denoise_rows.ROW_MASKS or not all(
            name in denoise_rows.ROW_FUNCTIONS for name in functions
        ):
            return [self.denoise(chunk, rng) for chunk in chunks]
        masks = denoise_rows.noise_masks(config.noise_mask, *chunks.shape, config, rng)
        inputs, inputs_lengths = denoise_rows.apply(config.inputs_fn, chunks, masks, self.vocab)
        targets, targets_lengths = denoise_rows.apply(config.targets_fn, chunks, masks, self.vocab)
        examples = [
            {"inputs": i, "targets": t}
            for i, t in zip(
                denoise_rows.with_eos(inputs, inputs_lengths, self.eos_id),
                denoise_rows.with_eos(targets, targets_lengths, self.eos_id),
                strict=True,
            )
        ]
        too_long = (inputs_lengths >= self.inputs_length) | (targets_lengths >= self.targets_length)
        for row in np.flatnonzero(too_long):  # rare: cut as `denoise` does
            examples[row] = self._denoise_with_mask(chunks[row], masks[row], rng)
        return examples

    def _denoise_with_mask(self, tokens, noise_mask, rng) -> dict[str, np.ndarray]:
        inputs, targets = self._corrupt(tokens, noise_mask, rng)
        if len(inputs) >= self.inputs_length or len(targets) >= self.targets_length:
            tokens, noise_mask = self._cut_to_fit(tokens, noise_mask)
            inputs, targets = self._corrupt(tokens, noise_mask, rng)
        eos = np.array([self.eos_id], np.int32)
        return {
            "inputs": np.concatenate([inputs, eos]).astype(np.int32),
            "targets": np.concatenate([targets, eos]).astype(np.int32),
        }

    def _select_random_chunk(self, tokens: np.ndarray, rng: np.random.Generator):
        """T5's select_random_chunk: one of the aligned 65536-token chunks, uniformly."""
        if len(tokens) <= MAX_DOCUMENT_TOKENS:
            return tokens
        start = MAX_DOCUMENT_TOKENS * rng.integers(-(-len(tokens) // MAX_DOCUMENT_TOKENS))
        return tokens[start : start + MAX_DOCUMENT_TOKENS]

    def examples_from_documents(
        self, documents: list[list[np.ndarray]], rng: np.random.Generator
    ) -> list[dict[str, np.ndarray]]:
        """A group of documents (lists of sentence token arrays) -> denoising examples.

        Returns:
            [{'inputs': int32 [<= inputs_length], 'targets': int32 [<= targets_length]}].
        """
        texts = [np.concatenate(document) for document in documents if len(document)]
        texts = [self._select_random_chunk(text, rng) for text in texts if len(text)]
        if self.config.concat_documents and texts:
            texts = [np.concatenate(texts)]
        examples = []
        for text in texts:
            text = text.astype(np.int32)
            num_full = len(text) // self.tokens_length
            if num_full:  # the full chunks at once, then the shorter last one
                full = text[: num_full * self.tokens_length]
                examples += self._denoise_rows(full.reshape(num_full, self.tokens_length), rng)
            tail = text[num_full * self.tokens_length :]
            if len(tail) >= 2:  # a 1-token chunk has nothing to corrupt and predict
                examples.append(self.denoise(tail, rng))
        return examples

    def finalize(self, ds, *, chunks: bool = False):
        """Pads or packs examples into fixed-shape t5x features (before batching).

        With chunks, ds gives each group's list of examples and blocks of rows come out.
        """
        lengths = {"inputs": self.inputs_length, "targets": self.targets_length}
        if self.config.pack:
            return packing.pack_dataset(
                ds, lengths, num_packing_bins=self.config.num_packing_bins, chunks=chunks
            )
        return packing.pad_dataset(ds, lengths, chunks=chunks)
