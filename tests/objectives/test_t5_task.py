"""The T5 task end to end: packed and unpacked batches give the same per-example losses."""

from __future__ import annotations

import grain
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.data import packing
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.models import t5
from bert_jax.objectives import t5_task


def _per_segment_losses(model, batch, segment_key=None) -> dict[tuple[int, int], float]:
    """Mean target cross-entropy of every example, keyed by (row, segment)."""
    logits = np.asarray(t5_task._logits(model, batch, deterministic=True, rngs=None))
    targets = np.asarray(batch["decoder_target_tokens"])
    weights = np.asarray(batch["decoder_loss_weights"])
    log_probs = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    xent = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    segments = np.asarray(batch[segment_key]) if segment_key else (weights > 0).astype(int)
    losses = {}
    for row in range(targets.shape[0]):
        for segment in np.unique(segments[row][weights[row] > 0]):
            mask = (segments[row] == segment) & (weights[row] > 0)
            losses[(row, int(segment))] = float(xent[row][mask].mean())
    return losses


def test_packed_and_unpacked_batches_give_the_same_per_example_losses(vocab_path):
    tokenizer = Tokenizer(vocab_path, extra_ids=100)
    objective = t5_task.T5Objective(t5_task.T5DataConfig.preset("span_corruption", 64), tokenizer)
    rng = np.random.default_rng(0)
    documents = [
        [rng.integers(6, 8000, rng.integers(5, 40)).astype(np.int32) for _ in range(3)]
        for _ in range(4)
    ]
    examples = objective.examples_from_documents(documents, rng)[:6]
    assert len(examples) >= 4
    lengths = {"inputs": 64, "targets": objective.targets_length}

    config = t5.t5_config("tiny", "v1_1", vocab_size=tokenizer.vocab_size, dropout_rate=0.0)
    model = t5.T5ForConditionalGeneration(config, rngs=nnx.Rngs(0))

    unpacked = [packing.pad_example(example, lengths) for example in examples]
    unpacked_batch = {k: jnp.stack([e[k] for e in unpacked]) for k in unpacked[0]}
    unpacked_losses = list(_per_segment_losses(model, unpacked_batch).values())

    # Short examples so that several share a row.
    short = [{"inputs": e["inputs"][:20], "targets": e["targets"][:5]} for e in examples]
    packed_rows = list(
        packing.pack_dataset(grain.MapDataset.source(short).to_iter_dataset(), lengths)
    )
    assert any(row["encoder_segment_ids"].max() > 1 for row in packed_rows), "nothing was packed"
    packed_batch = {k: jnp.stack([r[k] for r in packed_rows]) for k in packed_rows[0]}
    packed_losses = _per_segment_losses(model, packed_batch, "decoder_segment_ids")
    short_unpacked = [packing.pad_example(e, lengths) for e in short]
    short_batch = {k: jnp.stack([e[k] for e in short_unpacked]) for k in short_unpacked[0]}
    short_losses = sorted(_per_segment_losses(model, short_batch).values())

    assert len(packed_losses) == len(short) and len(unpacked_losses) == len(examples)
    np.testing.assert_allclose(sorted(packed_losses.values()), short_losses, atol=1e-5)
