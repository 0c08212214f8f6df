"""What one cell of a sweep costs: tokens, model FLOPs and device-hours at a given MFU.

  python -m bert_jax.compare.cost --config configs/compare.py:scale=paper --mfu 0.4

For each architecture of the sweep (the BERT encoder, the T5 encoder-decoder with its
baseline objective) prints tokens per cell, model FLOPs per step and per cell
(`bert_jax.telemetry.flops`: matmul FLOPs, 3 x forward, as MaxText counts them) and the hours one
cell takes on each accelerator of `bert_jax.telemetry.flops.PEAK_FLOPS` at that MFU (bfloat16).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from bert_jax import objectives
from bert_jax.compare import cells
from bert_jax.objectives.t5_task import T5DataConfig, T5Objective
from bert_jax.telemetry import flops

_CONFIG = config_flags.DEFINE_config_file("config", "configs/compare.py", "Sweep config.")
flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed for the device-hours.")
FLAGS = flags.FLAGS

REPRESENTATIVE = ("bert_mlm_nsp", "t5_iid_replace_spans")


def cell_cost(sweep, name: str) -> dict:
    config = cells.cell_config(sweep, cells.CELLS[name], 0)
    task = objectives.get_task(config)
    batch, length = config.train.batch_size, config.data.max_seq_length
    if config.model.name == "t5":
        targets = T5Objective(T5DataConfig.from_config(config), task.tokenizer).targets_length
        shapes = {"encoder_input_tokens": (batch, length), "decoder_input_tokens": (batch, targets)}
    else:
        predictions = config.objective.max_predictions_per_seq
        shapes = {"input_ids": (batch, length), "masked_lm_positions": (batch, predictions)}
    per_step = flops.train_flops_per_step(task.model_config, shapes)
    steps = config.train.num_steps
    return {
        "cell": name,
        "model": f"{config.model.name} {config.model.size}",
        "tokens": steps * batch * length,
        "flops_per_step": per_step,
        "flops": per_step * steps,
    }


def main(argv) -> None:
    del argv
    sweep = _CONFIG.value
    print(f"scale={sweep.compare.scale}, MFU {FLAGS.mfu:.0%} (bfloat16 peaks)")
    for name in REPRESENTATIVE:
        cost = cell_cost(sweep, name)
        peaks = {label: bf16 for _, label, bf16, _ in flops.PEAK_FLOPS}  # one row per chip
        hours = [
            f"{label} {cost['flops'] / (bf16 * FLAGS.mfu) / 3600:,.2f} h"
            for label, bf16 in peaks.items()
        ]
        print(
            f"{cost['cell']} ({cost['model']}): {cost['tokens']:,} tokens, "
            f"{cost['flops_per_step']:.3g} FLOPs/step, {cost['flops']:.3g} FLOPs per cell; "
            + ", ".join(hours)
        )


if __name__ == "__main__":
    app.run(main)
