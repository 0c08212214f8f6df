"""Model FLOPs per train step (analytic) and peak FLOP/s per device kind: the MFU.

Counted as MaxText's ``calculate_tflops_training_per_device`` counts them: the
matmuls only (a gather, a softmax or a layer norm adds nothing), 2 FLOPs per
multiply-add, and training = 3 x forward (the backward pass computes two
matmuls, input and weight gradients, for each forward one). Attention includes
QK^T and AV, 4 * L_q * L_k * heads * head_dim per example; causal
self-attention (the T5 decoder) counts half of that, as MaxText, Megatron-LM
and NeMo do, since a causal kernel skips the masked half. Rematerialisation's
recomputed forward is not model FLOPs and is not counted (MFU, not HFU).

Model specifics:

- BERT / ALBERT: per layer QKV, output projection and the two MLP matrices;
  ALBERT's shared layers still cost per layer and its E -> H projection is
  counted. The MLM head (H -> E transform and the E x V tied decoder) runs only
  on the P masked positions, as our model does (google-research/bert's
  ``gather_indexes``); pooler and pair classifier on [CLS].
- T5: encoder self-attention; decoder causal self-attention plus
  cross-attention (queries from L_t targets, keys/values from L_i inputs);
  gated-GELU (v1.1) has three MLP matrices, ReLU (v1.0) two; the lm_head
  (tied or not) is one D x V matmul per target token. Relative position
  biases are a gather.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

# Dense (no sparsity) peak FLOP/s per chip, from the vendors' data sheets. The
# float32 column is the rate of float32 matmuls at JAX's default precision:
# TF32 tensor cores on A100 / H100 / H200, one bfloat16 MXU pass on TPUs (JAX's
# "Matmul precision" guide: by default float32 dots use TF32 on recent GPUs and
# bfloat16 on TPU; `jax_default_matmul_precision=highest` is slower than this peak).
# Matched in order against `jax.devices()[0].device_kind` (lower case), so the
# longer TPU names ("v5 lite") come before their prefixes ("v5").
PEAK_FLOPS: tuple[tuple[str, str, float, float], ...] = (
    # (match, name, bfloat16, float32)
    ("h200", "NVIDIA H200", 989e12, 494.5e12),
    ("h100", "NVIDIA H100 SXM", 989e12, 494.5e12),
    ("a100", "NVIDIA A100", 312e12, 156e12),
    ("v6 lite", "TPU v6e", 918e12, 918e12),
    ("v6e", "TPU v6e", 918e12, 918e12),
    ("v5 lite", "TPU v5e", 197e12, 197e12),
    ("v5e", "TPU v5e", 197e12, 197e12),
    ("v5p", "TPU v5p", 459e12, 459e12),
    ("tpu v5", "TPU v5p", 459e12, 459e12),
    ("tpu v4", "TPU v4", 275e12, 275e12),
)


def peak_flops_per_device(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one ``device_kind`` chip for ``dtype`` compute; None if unknown."""
    kind = device_kind.lower()
    for match, _, bfloat16, float32 in PEAK_FLOPS:
        if match in kind:
            return float32 if dtype == "float32" else bfloat16
    return None


def _attention(batch: int, queries: int, keys: int, width: int, *, causal=False) -> float:
    """QK^T plus AV: two ``[queries, keys] x width`` matmuls per example."""
    flops = 4.0 * batch * queries * keys * width
    return flops / 2 if causal else flops


def bert_forward_flops(config, batch: int, length: int, predictions: int) -> float:
    """Forward matmul FLOPs of ``BertForPreTraining`` on ``[batch, length]`` inputs.

    Args:
      config: a ``BertConfig`` (BERT or ALBERT).
      batch, length: the input shape.
      predictions: P, the masked positions the MLM head scores per example.
    """
    hidden, embed = config.hidden_size, config.embedding_dim
    tokens = batch * length
    per_layer = 2.0 * tokens * hidden * (4 * hidden + 2 * config.intermediate_size)
    per_layer += _attention(batch, length, length, hidden)
    flops = config.num_layers * per_layer
    if config.embedding_size is not None:  # ALBERT's E -> H projection
        flops += 2.0 * tokens * embed * hidden
    flops += 2.0 * batch * hidden * (hidden + 2)  # pooler and pair classifier on [CLS]
    flops += 2.0 * batch * predictions * embed * (hidden + config.vocab_size)  # MLM head
    return flops


def t5_forward_flops(config, batch: int, inputs_length: int, targets_length: int) -> float:
    """Forward matmul FLOPs of ``T5ForConditionalGeneration``.

    Args:
      config: a ``T5Config``.
      batch: examples per step.
      inputs_length, targets_length: L_i encoder and L_t decoder tokens per example.
    """
    model, inner = config.d_model, config.num_heads * config.d_kv
    mlp_matrices = 3 if config.feed_forward.startswith("gated") else 2
    encoder_tokens, decoder_tokens = batch * inputs_length, batch * targets_length

    def mlp(tokens: int) -> float:
        return 2.0 * tokens * model * config.d_ff * mlp_matrices

    encoder = 2.0 * encoder_tokens * model * 4 * inner  # Q, K, V and output
    encoder += _attention(batch, inputs_length, inputs_length, inner) + mlp(encoder_tokens)
    decoder = 2.0 * decoder_tokens * model * 4 * inner  # self-attention projections
    decoder += _attention(batch, targets_length, targets_length, inner, causal=True)
    decoder += 2.0 * decoder_tokens * model * 2 * inner  # cross-attention Q and output
    decoder += 2.0 * encoder_tokens * model * 2 * inner  # cross-attention K and V
    decoder += _attention(batch, targets_length, inputs_length, inner) + mlp(decoder_tokens)
    lm_head = 2.0 * decoder_tokens * model * config.vocab_size
    return config.num_encoder_layers * encoder + config.num_decoder_layers * decoder + lm_head


def train_flops_per_step(model_config, shapes: Mapping[str, tuple[int, ...]]) -> float | None:
    """Model FLOPs of one train step (3 x forward) on a global batch of these shapes.

    Args:
      model_config: the task's ``BertConfig`` or ``T5Config``.
      shapes: feature name -> global shape, in the pretraining objectives' names.

    Returns:
      FLOPs, or None for a model or batch this module does not know (fine-tuning heads).
    """
    if hasattr(model_config, "embedding_dim") and "masked_lm_positions" in shapes:
        size, length = shapes["input_ids"]
        predictions = shapes["masked_lm_positions"][1]
        forward = bert_forward_flops(model_config, size, length, predictions)
    elif hasattr(model_config, "d_model") and "encoder_input_tokens" in shapes:
        size, inputs_length = shapes["encoder_input_tokens"]
        targets_length = shapes["decoder_input_tokens"][1]
        forward = t5_forward_flops(model_config, size, inputs_length, targets_length)
    else:
        return None
    return 3.0 * forward


def device_peak(devices, dtype: str) -> float | None:
    """Peak FLOP/s of ``devices[0]``; logs once (and returns None) for an unknown kind."""
    kind = devices[0].device_kind
    peak = peak_flops_per_device(kind, dtype)
    if peak is None:
        logging.info(
            "device kind %r has no peak FLOP/s in telemetry.flops.PEAK_FLOPS: no MFU logged",
            kind,
        )
    return peak
