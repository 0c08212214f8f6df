"""The T5 paper's objective family as named presets, and the config they fill in.

Every objective of Raffel et al. (2019) section 3.3 is one denoising transform configured by
a noise mask ('spans' | 'iid' | 'prefix'), a density, an inputs function and a targets
function (see `span_corruption.py`); `PRESETS` names the paper's rows and `ALIASES` the
T5 gin file names, so a run config says `objective.name` plus any overrides.
"""

from __future__ import annotations

import dataclasses

from bert_jax.data import packing
from bert_jax.objectives import span_corruption

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
