"""BERT / ALBERT pretraining examples: masked LM plus a sentence-pair task (NSP or SOP).

Data half: documents -> `[CLS] A [SEP] B [SEP]` rows (sentence_pairs.py) -> masked-LM
corruption (masking.py) -> one fixed-shape feature dict per example, NumPy only.
JAX half: ``BertPretrainingTask``, the model, loss and evaluation (`bert_eval`) the train
loop calls (the `objectives.task.Task` contract).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax.data.tokenizer import Tokenizer
from bert_jax.models import registry
from bert_jax.objectives import bert_eval
from bert_jax.objectives.bert_eval import pretraining_logits as _logits
from bert_jax.objectives.logit_metrics import label_logit_stats
from bert_jax.objectives.masking import mask_tokens
from bert_jax.objectives.sentence_pairs import (
    SENTENCE_PAIR_TASKS,
    build_bert_inputs,
    create_segment_pairs,
)
from bert_jax.objectives.task import PretrainingTask

# [CLS] A [SEP] B [SEP]
NUM_SPECIAL_TOKENS_PER_PAIR = 3


@dataclasses.dataclass(frozen=True)
class BertDataConfig:
    """How BERT/ALBERT examples are made (defaults: BERT-base phase 1, Devlin et al. 2019).

    Attributes:
      max_seq_length: L, tokens per example including [CLS] and two [SEP].
      masked_lm_prob: fraction of maskable tokens to predict.
      max_predictions_per_seq: P, most masked-LM predictions per example.
      short_seq_prob: probability that a document aims at a random shorter length.
      whole_word_masking: mask all pieces of a word together.
      max_ngram: longest masked n-gram of words/tokens, p(n) ∝ 1/n (ALBERT: 3).
      sentence_pair_task: 'nsp' (BERT), 'sop' (ALBERT) or 'none' (label always 0).
      sop_both_orders: every SOP pair in both orders instead of a coin flip (labels exactly
        balanced). Held-out data always uses it; for training it is an option (ALBERT flips).
    """

    max_seq_length: int = 128
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    short_seq_prob: float = 0.1
    whole_word_masking: bool = False
    max_ngram: int = 1
    sentence_pair_task: str = "nsp"
    sop_both_orders: bool = False

    def __post_init__(self):
        problems = []
        if self.sentence_pair_task not in SENTENCE_PAIR_TASKS:
            problems.append(
                f"sentence_pair_task must be one of {SENTENCE_PAIR_TASKS}, "
                f"got {self.sentence_pair_task!r}"
            )
        if self.max_seq_length < NUM_SPECIAL_TOKENS_PER_PAIR + 2:
            problems.append(f"max_seq_length must be >= 5, got {self.max_seq_length}")
        if not 0.0 <= self.masked_lm_prob <= 1.0:
            problems.append(f"masked_lm_prob must be in [0, 1], got {self.masked_lm_prob}")
        if self.max_predictions_per_seq < 1:
            problems.append(
                f"max_predictions_per_seq must be >= 1, got {self.max_predictions_per_seq}"
            )
        if not 0.0 <= self.short_seq_prob <= 1.0:
            problems.append(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if self.max_ngram < 1:
            problems.append(f"max_ngram must be >= 1, got {self.max_ngram}")
        if problems:
            raise ValueError("BertDataConfig: " + "; ".join(problems))

    @classmethod
    def from_config(cls, config) -> BertDataConfig:
        """Reads config.data.max_seq_length and the config.objective.* fields of this class."""
        values = {"max_seq_length": _read_field(config, "data", "max_seq_length")}
        for field in dataclasses.fields(cls):
            if field.name != "max_seq_length":
                values[field.name] = _read_field(config, "objective", field.name)
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{error} (check config.objective.* / config.data.*)") from error


def _read_field(config, section: str, name: str):
    try:
        return getattr(getattr(config, section), name)
    except (AttributeError, KeyError) as error:
        raise ValueError(f"config.{section}.{name} is missing from the run config") from error


class BertObjective:
    """Turns groups of tokenised documents into BERT/ALBERT pretraining examples.

    Every example has the fixed shapes of the CONTRACT (L = max_seq_length,
    P = max_predictions_per_seq): input_ids, input_mask, segment_ids [L] int32;
    masked_lm_positions, masked_lm_ids [P] int32; masked_lm_weights [P] float32;
    pair_labels [] int32 (1 = random next for NSP, swapped for SOP).
    """

    def __init__(self, data_config: BertDataConfig, tokenizer):
        self.data_config = data_config
        # Only ids and tables are kept, so pickling into grain workers reloads nothing.
        self.cls_id = int(tokenizer.cls_id)
        self.sep_id = int(tokenizer.sep_id)
        self.mask_id = int(tokenizer.mask_id)
        self.pad_id = int(tokenizer.pad_id)
        self.word_start = np.asarray(tokenizer.word_start, bool)
        self.special_ids = np.asarray(tokenizer.special_ids, np.int32)
        self.random_token_range = (int(tokenizer.first_normal_id), int(tokenizer.spm_vocab_size))

    @property
    def min_documents(self) -> int:
        """Documents a split needs (the pipeline checks): NSP's random next is another one."""
        return 2 if self.data_config.sentence_pair_task == "nsp" else 1

    def examples_from_documents(
        self, documents: list[list[np.ndarray]], rng: np.random.Generator
    ) -> list[dict[str, np.ndarray]]:
        """`example_block`'s examples, one dict per example ([] for none)."""
        block = self.example_block(documents, rng)
        # `values[index, ...]` keeps pair_labels a 0-d array rather than a NumPy scalar.
        return [
            {name: values[index, ...] for name, values in block.items()}
            for index in range(len(block["pair_labels"]) if block else 0)
        ]

    def example_block(
        self, documents: list[list[np.ndarray]], rng: np.random.Generator
    ) -> dict[str, np.ndarray] | list:
        """Sentence pairs of the group, laid out and masked, as one block of rows.

        Args:
          documents: a group of documents, each a list of sentences of int32 token ids. For NSP
            the random next segments come from the other documents of the same group.
          rng: the only source of randomness; same state -> same examples.

        Returns:
          The CONTRACT's features with a leading example axis [N, ...], examples in document
          order (the pipeline shuffles later); [] when the group makes no pair.
        """
        config = self.data_config
        pairs = create_segment_pairs(
            documents,
            rng,
            max_num_tokens=config.max_seq_length - NUM_SPECIAL_TOKENS_PER_PAIR,
            short_seq_prob=config.short_seq_prob,
            task=config.sentence_pair_task,
            both_orders=config.sop_both_orders,
        )
        if not pairs:
            return []
        inputs = build_bert_inputs(
            pairs, cls_id=self.cls_id, sep_id=self.sep_id, max_seq_length=config.max_seq_length
        )
        masked = mask_tokens(
            inputs["input_ids"],
            rng,
            word_start=self.word_start,
            special_ids=self.special_ids,
            mask_id=self.mask_id,
            random_token_range=self.random_token_range,
            masked_lm_prob=config.masked_lm_prob,
            max_predictions_per_seq=config.max_predictions_per_seq,
            whole_word=config.whole_word_masking,
            max_ngram=config.max_ngram,
            padding_id=self.pad_id,
        )
        return {
            "input_ids": masked["input_ids"],  # [N, L]
            "input_mask": inputs["input_mask"],  # [N, L]
            "segment_ids": inputs["segment_ids"],  # [N, L]
            "masked_lm_positions": masked["masked_lm_positions"],  # [N, P]
            "masked_lm_ids": masked["masked_lm_ids"],  # [N, P]
            "masked_lm_weights": masked["masked_lm_weights"],  # [N, P]
            "pair_labels": np.array([label for _, _, label in pairs], np.int32),  # [N]
        }

    def finalize(self, ds, *, chunks: bool = False):
        """Examples already have fixed shapes: nothing to pad or pack before batching."""
        del chunks
        return ds


# ---------------------------------------------------------------------------
# Model, loss and task (the JAX half of the BERT/ALBERT objective; evaluation: bert_eval.py).
# ---------------------------------------------------------------------------


class BertPretrainingTask(PretrainingTask):
    """BERT (MLM + NSP) and ALBERT (MLM + SOP, shared layers) as one task family.

    The loss is the masked-LM cross-entropy plus the sentence-pair loss unless
    ``sentence_pair_task`` is 'none'; evaluation and baselines are in `bert_eval`.
    """

    def __init__(self, config: ml_collections.ConfigDict):
        tokenizer = Tokenizer(config.data.vocab_path)
        model_cfg = registry.model_config(config, tokenizer.vocab_size)
        data_config = BertDataConfig.from_config(config)
        # Held-out SOP pairs come in both orders: balanced labels, no coin flips.
        eval_data_config = dataclasses.replace(data_config, sop_both_orders=True)
        eval_prob = config.objective.get("eval_masked_lm_prob")
        if eval_prob is not None:
            try:  # BertDataConfig owns the bound; the error names the field that broke it
                eval_data_config = dataclasses.replace(eval_data_config, masked_lm_prob=eval_prob)
            except ValueError as error:
                raise ValueError(f"config.objective.eval_masked_lm_prob: {error}") from None
        super().__init__(
            config,
            tokenizer,
            BertObjective(data_config, tokenizer),
            BertObjective(eval_data_config, tokenizer),
        )
        self.model_config = model_cfg
        self.tokens_per_example = data_config.max_seq_length
        self.pairs = data_config.sentence_pair_task != "none"  # a pair head that trains
        self.loss_terms = ("mlm_loss", "pair_loss") if self.pairs else ("mlm_loss",)

    def create_model(self, rngs):
        return registry.model_spec(self.model_config).create_model(rngs)

    def loss_fn(self, model, batch, *, deterministic: bool, rngs=None):
        mlm_logits, pair_logits = _logits(model, batch, deterministic=deterministic, rngs=rngs)
        weights = batch["masked_lm_weights"]  # [batch, predictions]
        # [batch, predictions]; correct = gold logit >= row max (ties correct, logit_metrics).
        mlm_xent, _, mlm_correct = label_logit_stats(mlm_logits, batch["masked_lm_ids"])
        mlm_loss = jnp.sum(mlm_xent * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        mlm_correct = mlm_correct * weights
        metrics = {
            "mlm_loss": mlm_loss,
            "mlm_accuracy": jnp.sum(mlm_correct) / jnp.maximum(jnp.sum(weights), 1.0),
        }
        if not self.pairs:  # no pair task: its untrained head's figures would be noise
            return mlm_loss, metrics
        pair_xent = optax.softmax_cross_entropy_with_integer_labels(
            pair_logits, batch["pair_labels"]
        )
        metrics["pair_loss"] = jnp.mean(pair_xent)
        metrics["pair_accuracy"] = jnp.mean(jnp.argmax(pair_logits, -1) == batch["pair_labels"])
        return mlm_loss + metrics["pair_loss"], metrics

    def mean_weights(self, batch) -> dict[str, jnp.ndarray]:
        predictions = jnp.sum(batch["masked_lm_weights"])
        pairs = jnp.asarray(batch["pair_labels"].shape[0], jnp.float32)
        return {
            "mlm_loss": predictions,
            "mlm_accuracy": predictions,
            "pair_loss": pairs,
            "pair_accuracy": pairs,
        }

    def eval_fn(self, model, batch):
        return bert_eval.eval_sums(model, batch, self.tokenizer.mask_id, self.pairs)

    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        return bert_eval.eval_metrics(totals)

    def eval_baselines(self, batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
        train_counts = bert_eval.training_unigram_counts(self.config.data, self.tokenizer)
        return bert_eval.held_out_baselines(train_counts, batches, self.tokenizer, self.pairs)
