"""Frozen features of a pretrained (or randomly initialised) model, for the probe tasks.

`Encoder(config, workdir)` restores the parameters of the newest checkpoint in
``workdir`` (``checkpointing.inference``: parameters only, the model and vocabulary
the checkpoint records; ``config``'s vocabulary for older checkpoints) or, with ``workdir=None``,
initialises the model as the train loop does at step 0 (``config.seed``): the
no-pretraining row. ``embed(texts)`` is the mean over real tokens of the encoder's
last hidden states (BERT: ``[CLS] text [SEP]``; T5: ``text </s>`` through the encoder
only, as in the issue: encoder-decoder models are probed through their encoder).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bert_jax.checkpointing.inference import restore_for_inference
from bert_jax.models import registry
from bert_jax.models.loading import load_model, recorded_tokenizer
from bert_jax.models.t5_config import T5Config
from bert_jax.runtime import sharding
from bert_jax.training.state import abstract_train_state


class Encoder:
    """Mean-pooled encoder outputs of one model (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None, batch_size=64):
        self.step = 0
        self._batch_size = batch_size
        if workdir is None:
            self.tokenizer = registry.tokenizer(config)
            vocab_size = self.tokenizer.vocab_size
            loaded = load_model("random", run_config=config, vocab_size=vocab_size)
            spec = registry.model_spec(loaded.model_config)
            graphdef, _, init = abstract_train_state(spec.create_model, _NO_OPTIMIZER, config.seed)
            with sharding.mesh_context(config.mesh):
                params = jax.jit(init)().params
        else:  # the model and vocabulary the checkpoint records
            with restore_for_inference(workdir, config.mesh) as restored:
                graphdef, params, self.step = restored.graphdef, restored.params, restored.step
            self.tokenizer = recorded_tokenizer(restored.run_config) or registry.tokenizer(config)
            spec = restored.spec
        self.family = "t5" if isinstance(spec.model_config, T5Config) else "bert"
        self.graphdef, self.params = graphdef, params
        self.model = nnx.merge(graphdef, params)
        self._forward = nnx.jit(functools.partial(_pooled, family=self.family))

    def encode_ids(self, text: str, max_length: int) -> list[int]:
        ids = [int(i) for i in self.tokenizer.encode(text)]
        if self.family == "t5":
            return ids[: max_length - 1] + [self.tokenizer.eos_id]
        return [self.tokenizer.cls_id, *ids[: max_length - 2], self.tokenizer.sep_id]

    def embed(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        """``[len(texts), hidden]`` float32 mean-pooled features."""
        rows = [self.encode_ids(text, max_length) for text in texts]
        out = []
        for start in range(0, len(rows), self._batch_size):
            chunk = rows[start : start + self._batch_size]
            ids = np.zeros((self._batch_size, max_length), np.int32)  # one compiled shape
            for i, row in enumerate(chunk):
                ids[i, : len(row)] = row
            out.append(np.asarray(self._forward(self.model, jnp.asarray(ids)))[: len(chunk)])
        return np.concatenate(out).astype(np.float32)


def _pooled(model, ids: jax.Array, *, family: str) -> jax.Array:
    mask = (ids > 0).astype(jnp.float32)  # pad id 0 in both vocabularies
    if family == "t5":
        hidden = model.encode(ids)
    else:
        hidden, _ = model.encode(ids, jnp.zeros_like(ids), mask.astype(jnp.int32))
    total = jnp.sum(hidden.astype(jnp.float32) * mask[..., None], axis=1)
    return total / jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1.0)


class _NoOptimizer:
    """The train state's optimizer slot when only the initial parameters are wanted."""

    @staticmethod
    def init(params):
        return ()


_NO_OPTIMIZER = _NoOptimizer()
