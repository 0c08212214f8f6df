"""Scale figures from XLA:CPU compilation alone: nothing big ever runs.

  python -m benchmarks.scale_figures                  # all three tables (minutes, CPU-heavy)
  python -m benchmarks.scale_figures --parts=remat    # remat | scan | fsdp, comma-separated
  python -m benchmarks.scale_figures --smoke          # tiny shapes, seconds

Prints markdown tables (the README "Scaling" section):

1. remat: temp bytes (`compile().memory_analysis().temp_size_in_bytes`) of a BERT-base
   train step at sequence 512, batch 8, for each `config.model.remat_policy`, against
   `none` (no rematerialisation) as the peer, with the layers unrolled and scanned.
2. scan: compile time of a BERT-large (24 layers) train step with and without
   `config.model.scan_layers`, against the unscanned compile.
3. fsdp: bytes of parameters + optimizer state per device for BERT-large (AdamW) and
   T5-large (v1.1, Adafactor as its recipe) with `config.mesh.preset=fsdp` over 8 simulated
   devices, beside the unsharded total. The shardings are the train loop's
   (`state.state_shardings`); Adafactor's factored moments have another rank than their
   parameters and stay replicated.

Models use the published vocabularies (BERT 30,522 WordPieces, T5 32,128), not the
8,000-piece sentencepiece model of the embedded corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

SIMULATED_DEVICES = 8
VOCAB_SIZES = {"bert": 30522, "t5": 32128}


def abstract_batch(family: str, batch: int, length: int, predictions=20, targets_length=32):
    """A train batch of ShapeDtypeStructs in the objectives' feature names."""
    import jax
    import jax.numpy as jnp

    ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
    floats = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    if family == "t5":
        return {
            "encoder_input_tokens": ints(batch, length),
            "decoder_input_tokens": ints(batch, targets_length),
            "decoder_target_tokens": ints(batch, targets_length),
            "decoder_loss_weights": floats(batch, targets_length),
        }
    return {
        "input_ids": ints(batch, length),
        "input_mask": ints(batch, length),
        "segment_ids": ints(batch, length),
        "masked_lm_positions": ints(batch, predictions),
        "masked_lm_ids": ints(batch, predictions),
        "masked_lm_weights": floats(batch, predictions),
        "pair_labels": ints(batch),
    }


def build_task(family: str, size: str, **model_overrides):
    """Recipe config and task of ``family`` at ``size``, with the published vocabulary."""
    from benchmarks import common
    from bert_jax import objectives

    config = common.load_recipe(family, f"size={size}")
    for name, value in model_overrides.items():
        config.model[name] = value
    task = objectives.get_task(config)
    # The task's create_model builds from its model_config.
    task.model_config = dataclasses.replace(task.model_config, vocab_size=VOCAB_SIZES[family])
    return config, task


def compile_train_step(config, task, batch):
    """``(compiled step, seconds to lower and compile)`` on one CPU device."""
    import jax

    from bert_jax.training import loop, optim
    from bert_jax.training.state import abstract_train_state

    tx, schedule = optim.create_optimizer(config.optim, config.train.num_steps)
    graphdef, abs_state, _ = abstract_train_state(task.create_model, tx, config.seed)
    step = jax.jit(loop.make_train_step(task, graphdef, tx, schedule), donate_argnums=(0,))
    start = time.perf_counter()
    compiled = step.lower(abs_state, batch, jax.random.key(0)).compile()
    return compiled, time.perf_counter() - start


def _gib(num_bytes: float) -> str:
    if num_bytes < 2**30:
        return f"{num_bytes / 2**20:.1f} MiB"
    return f"{num_bytes / 2**30:.2f} GiB"


def remat_table(args) -> list[str]:
    size, length = ("tiny", 64) if args.smoke else ("base", 512)
    rows = [
        f"BERT-{size} train step, batch 8, sequence {length}: temp bytes "
        "(XLA:CPU `memory_analysis().temp_size_in_bytes`)",
        "",
        "| remat_policy | layers unrolled | vs none | scan_layers | vs none |",
        "|---|---|---|---|---|",
    ]
    baselines: dict[bool, int] = {}
    for policy in ("none", "full", "dots_saveable", "minimal"):
        cells = []
        for scan in (False, True):
            config, task = build_task(
                "bert", size, remat_policy=policy, scan_layers=scan, dropout_rate=0.0
            )
            batch = abstract_batch("bert", 8, length, predictions=max(1, round(0.15 * length)))
            compiled, _ = compile_train_step(config, task, batch)
            temp = compiled.memory_analysis().temp_size_in_bytes
            baselines.setdefault(scan, temp)
            cells += [_gib(temp), f"{temp / baselines[scan]:.2f}"]
        rows.append(f"| {policy} | " + " | ".join(cells) + " |")
    return rows


def scan_table(args) -> list[str]:
    size, length = ("tiny", 64) if args.smoke else ("large", 512)
    rows = [
        f"BERT-{size} train step, batch 8, sequence {length}: lower + compile on XLA:CPU",
        "",
        "| scan_layers | compile time | vs unscanned | temp bytes |",
        "|---|---|---|---|",
    ]
    baseline = None
    for scan in (False, True):
        config, task = build_task("bert", size, scan_layers=scan, dropout_rate=0.0)
        batch = abstract_batch("bert", 8, length, predictions=max(1, round(0.15 * length)))
        compiled, seconds = compile_train_step(config, task, batch)
        baseline = baseline or seconds
        temp = compiled.memory_analysis().temp_size_in_bytes
        rows.append(f"| {scan} | {seconds:.1f} s | {seconds / baseline:.2f} | {_gib(temp)} |")
    return rows


def fsdp_table(args) -> list[str]:
    import jax

    from bert_jax.runtime import sharding
    from bert_jax.training import optim
    from bert_jax.training.state import abstract_train_state, state_shardings

    size = "tiny" if args.smoke else "large"
    rows = [
        f"Parameters + optimizer state, `preset=fsdp` over {jax.device_count()} devices:",
        "",
        "| model | optimizer | parameters | unsharded total | per device (fsdp) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for family in ("bert", "t5"):
        config, task = build_task(family, size)
        config.mesh.preset = "fsdp"
        mesh, rules = sharding.mesh_from_config(config.mesh)
        tx, _ = optim.create_optimizer(config.optim, config.train.num_steps)
        with sharding.use_mesh(mesh, rules):
            _, abs_state, _ = abstract_train_state(task.create_model, tx, config.seed)
            shardings = state_shardings(abs_state, mesh, rules)
        leaves = jax.tree.leaves(abs_state)
        total = sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
        per_device = sum(
            math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
            for x, s in zip(leaves, jax.tree.leaves(shardings), strict=True)
        )
        params = sum(math.prod(x.shape) for x in jax.tree.leaves(abs_state.params))
        rows.append(
            f"| {family.upper()}-{size} | {config.optim.name} | {params / 1e6:,.0f}M | "
            f"{_gib(total)} | {_gib(per_device)} | {per_device / total:.3f} |"
        )
    return rows


TABLES = {"remat": remat_table, "scan": scan_table, "fsdp": fsdp_table}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="remat,scan,fsdp", help="comma-separated tables")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    args = parser.parse_args(argv)
    parts = [part for part in args.parts.split(",") if part]
    unknown = sorted(set(parts) - set(TABLES))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; know {sorted(TABLES)}")
    # Simulated devices exist only if the flag is set before JAX starts.
    os.environ.setdefault(
        "XLA_FLAGS", f"--xla_force_host_platform_device_count={SIMULATED_DEVICES}"
    )
    import jax

    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices\n")
    for part in parts:
        print("\n".join(TABLES[part](args)) + "\n", flush=True)


if __name__ == "__main__":
    main()
