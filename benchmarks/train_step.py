"""Training-step throughput: our jitted train step vs Hugging Face transformers (PyTorch).

  python -m benchmarks.train_step --model=bert    # tiny BERT (L2 H128 A2 I512), 32 x 128, P=20
  python -m benchmarks.train_step --model=t5      # tiny T5 v1.1, 32 x (128 inputs + 32 targets)
  python -m benchmarks.train_step --model=bert --size=base --batch_size=64 --dtype=bfloat16
  python -m benchmarks.train_step --model=t5 --optimizer=adafactor   # T5's recipe optimizer
  python -m benchmarks.train_step --smoke                            # seconds; for the tests

ours: `bert_jax.training.loop.make_train_step` for the task `objectives.get_task` builds from
configs/bert.py or configs/t5.py, jitted with the train loop's shardings and donation,
on a mesh over the default JAX backend. peer: `transformers.BertForPreTraining` or
`T5ForConditionalGeneration` built from the same shapes (`bert_weights.*.hf_config`), eager
PyTorch, `loss.backward()`, global-norm clipping and an optimizer step with the same
hyperparameters (AdamW with decay on rank >= 2 tensors, or transformers' Adafactor),
torch.set_num_threads(os.cpu_count()) on CPU. Both get the same random batch; dropout
follows the recipe (0 for both tiny recipes). Steps alternate in blocks (ours, peer,
ours, peer, ...); the median block gives the step time. On a GPU the peer runs only if
torch has CUDA; otherwise the script says so and prints no ratio.

Known asymmetries: BERT: ours projects only the P masked positions onto the vocabulary
(as google-research/bert does) while BertForPreTraining projects all L positions; T5:
ours adds the z-loss term (1e-4 log^2 Z) of t5x.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks import common
from bert_jax.runtime import host_heap

SMOKE_MODEL = {
    "bert": {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "num_layers": 1},
    "t5": {
        "d_model": 32,
        "num_heads": 2,
        "d_ff": 64,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
    },
}


def build_config(args):
    """The recipe, resized and with the optimizer both sides will use."""
    config = common.load_recipe(args.model, f"size={args.size}")
    config.train.batch_size = args.batch_size
    config.data.max_seq_length = args.seq_len
    config.model.dtype = args.dtype
    if args.model == "bert":
        config.objective.max_predictions_per_seq = args.predictions
    else:
        config.objective.targets_length = args.targets_length
    if args.smoke:
        for name, value in SMOKE_MODEL[args.model].items():
            config.model[name] = value
    # A constant learning rate: the peer's optimizer gets the same number, no scheduler.
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 0
    if args.optimizer == "adamw":
        config.optim.name = "adamw"
        config.optim.learning_rate = 1e-4
        config.optim.weight_decay = 0.01
        config.optim.grad_clip_norm = 1.0
    elif args.optimizer == "adafactor":
        config.optim.name = "adafactor"
        config.optim.learning_rate = 0.01
        config.optim.weight_decay = 0.0
        config.optim.grad_clip_norm = 0.0
    else:
        raise ValueError(f"--optimizer={args.optimizer!r}: adamw | adafactor")
    return config


def random_batch(args, vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One batch in our feature names (tokens avoid the special ids 0..5)."""
    batch, length = args.batch_size, args.seq_len
    if args.model == "bert":
        positions = np.sort(
            np.stack(
                [
                    rng.choice(np.arange(1, length - 1), args.predictions, replace=False)
                    for _ in range(batch)
                ]
            ),
            axis=1,
        )  # [batch, predictions]
        return {
            "input_ids": rng.integers(6, vocab_size, (batch, length), dtype=np.int32),
            "input_mask": np.ones((batch, length), np.int32),
            "segment_ids": (np.arange(length) >= length // 2)
            .astype(np.int32)[None]
            .repeat(batch, 0),
            "masked_lm_positions": positions.astype(np.int32),
            "masked_lm_ids": rng.integers(6, vocab_size, positions.shape, dtype=np.int32),
            "masked_lm_weights": np.ones(positions.shape, np.float32),
            "pair_labels": rng.integers(0, 2, batch, dtype=np.int32),
        }
    targets = rng.integers(6, vocab_size, (batch, args.targets_length), dtype=np.int32)
    return {
        "encoder_input_tokens": rng.integers(6, vocab_size, (batch, length), dtype=np.int32),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),  # 0 starts decoding
        "decoder_loss_weights": np.ones(targets.shape, np.float32),
    }


def make_ours(config, task, batch_np: dict[str, np.ndarray], steps: int):
    """Our jitted step, set up exactly as `train_and_evaluate` sets it up."""
    import jax

    from bert_jax.data import pipeline
    from bert_jax.runtime import sharding
    from bert_jax.training import loop, optim
    from bert_jax.training.state import abstract_train_state, state_shardings

    tx, schedule = optim.create_optimizer(config.optim, config.train.num_steps)
    mesh = sharding.create_mesh(config.mesh.shape)
    rules = sharding.validate_rules(config.mesh.axis_rules)
    with sharding.use_mesh(mesh, rules):
        graphdef, abs_state, init = abstract_train_state(task.create_model, tx, config.seed)
        shardings = state_shardings(abs_state, mesh, rules)
        data_sharding = sharding.data_sharding(mesh, rules)
        holder = {"state": jax.jit(init, out_shardings=shardings)()}
        train_step = jax.jit(
            loop.make_train_step(task, graphdef, tx, schedule),
            in_shardings=(shardings, data_sharding, None),
            out_shardings=(shardings, None),
            donate_argnums=(0,),
        )
        batch = pipeline.global_batch(batch_np, data_sharding)
    key = jax.random.key(config.seed)

    def run():
        with sharding.use_mesh(mesh, rules):
            for _ in range(steps):
                holder["state"], metrics = train_step(holder["state"], batch, key)
            loss = float(metrics["loss"])  # waits for the last step
        return {"steps": steps, "loss": loss}

    return run


def to_hf_inputs(model: str, batch: dict[str, np.ndarray], torch, device):
    """Our batch as transformers' keyword arguments (labels -100 where there is no target)."""
    tensor = lambda x: torch.as_tensor(np.asarray(x, np.int64), device=device)  # noqa: E731
    if model == "bert":
        labels = np.full(batch["input_ids"].shape, -100, np.int64)
        np.put_along_axis(labels, batch["masked_lm_positions"], batch["masked_lm_ids"], axis=1)
        return {
            "input_ids": tensor(batch["input_ids"]),
            "token_type_ids": tensor(batch["segment_ids"]),
            "attention_mask": tensor(batch["input_mask"]),
            "labels": tensor(labels),
            "next_sentence_label": tensor(batch["pair_labels"]),
        }
    return {
        "input_ids": tensor(batch["encoder_input_tokens"]),
        "attention_mask": tensor(np.ones_like(batch["encoder_input_tokens"])),
        "labels": tensor(batch["decoder_target_tokens"]),  # HF shifts right, starting with 0
    }


def make_peer(args, config, task, batch_np, steps: int, device: str):
    """transformers model + torch optimizer with the same hyperparameters as ours."""
    import torch
    import transformers

    torch.manual_seed(config.seed)
    if args.model == "bert":
        from bert_jax.export import bert_weights

        model = transformers.BertForPreTraining(bert_weights.hf_config(task.model_config))
    else:
        from bert_jax.export import t5_weights

        model = transformers.T5ForConditionalGeneration(t5_weights.hf_config(task.model_config))
    model.to(device).train()
    optim = config.optim
    if optim.name == "adamw":
        params = list(model.parameters())
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": optim.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(
            groups, lr=optim.learning_rate, betas=(optim.b1, optim.b2), eps=optim.eps
        )
    else:
        optimizer = transformers.optimization.Adafactor(
            model.parameters(),
            lr=optim.learning_rate,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            clip_threshold=1.0,
            decay_rate=-0.8,
        )
    inputs = to_hf_inputs(args.model, batch_np, torch, device)
    autocast_dtype = torch.bfloat16 if args.dtype == "bfloat16" else None

    def run():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(
                device_type=device, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                loss = model(**inputs).loss
            loss.backward()
            if optim.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip_norm)
            optimizer.step()
        return {"steps": steps, "loss": loss.item()}  # .item() waits for the device

    return run


def flops_per_step(args, task) -> dict[str, float]:
    """Analytic matmul FLOPs of one train step (telemetry.flops, 3 x forward) per contender.

    The peer's BERT head scores all L positions (BertForPreTraining), ours only the P
    masked ones; T5 is FLOP-matched.
    """
    from bert_jax.telemetry import flops

    config = task.model_config
    if args.model == "bert":
        ours = flops.bert_forward_flops(config, args.batch_size, args.seq_len, args.predictions)
        peer = flops.bert_forward_flops(config, args.batch_size, args.seq_len, args.seq_len)
    else:
        ours = peer = flops.t5_forward_flops(
            config, args.batch_size, args.seq_len, args.targets_length
        )
    return {"ours": 3.0 * ours, "peer": 3.0 * peer}


def peer_device(jax_backend: str, torch) -> tuple[str | None, str]:
    """Where the peer can run beside ours, or None with the reason."""
    if jax_backend == "cpu":
        torch.set_num_threads(os.cpu_count())
        return "cpu", f"cpu, torch {torch.get_num_threads()} threads"
    if jax_backend == "gpu" and torch.cuda.is_available():
        return "cuda", f"cuda ({torch.cuda.get_device_name()})"
    return None, f"torch {torch.__version__} cannot run on JAX's backend {jax_backend!r}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("bert", "t5"), default="bert")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128, help="BERT length / T5 inputs")
    parser.add_argument("--targets_length", type=int, default=32, help="T5 only")
    parser.add_argument("--predictions", type=int, default=20, help="BERT only: P")
    parser.add_argument("--optimizer", choices=("adamw", "adafactor"), default="adamw")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes, seconds")
    parser.add_argument(
        "--host_heap",
        choices=("reuse", "default"),
        default="reuse",
        help="reuse: restart once with bert_jax.runtime.host_heap.TUNABLES (both contenders run "
        "under them); default: glibc's own malloc settings",
    )
    args = parser.parse_args(argv)
    if args.host_heap == "reuse" and argv is None:
        host_heap.reexec_with_heap_reuse()
    if args.smoke:
        args.batch_size, args.seq_len, args.targets_length, args.predictions = 4, 32, 8, 5
        args.steps, args.repeats = 1, 1

    import jax
    import torch
    import transformers

    from bert_jax import objectives

    config = build_config(args)
    task = objectives.get_task(config)
    batch_np = random_batch(args, task.tokenizer.vocab_size, np.random.default_rng(config.seed))
    ours = make_ours(config, task, batch_np, args.steps)
    device, device_note = peer_device(jax.default_backend(), torch)
    contenders = {"ours (JAX, jit)": ours}
    if device is not None:
        contenders["HF transformers (PyTorch eager)"] = make_peer(
            args, config, task, batch_np, args.steps, device
        )
    tokens_per_step = args.batch_size * (
        args.seq_len + (args.targets_length if args.model == "t5" else 0)
    )

    print(f"machine: {common.machine_info()}")
    print(
        f"model: {args.model} size={args.size} {task.model_config}; batch {args.batch_size}; "
        f"{tokens_per_step} tokens/step; optimizer {config.optim.name}; dtype {args.dtype}"
    )
    print(
        f"JAX {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); "
        f"peer: {device_note}; transformers {transformers.__version__}; "
        f"{args.steps} steps x {args.repeats} alternating repeats (median)"
    )
    step_flops = flops_per_step(args, task)
    heap = os.environ.get("GLIBC_TUNABLES", "glibc defaults")
    print(
        f"host heap: {heap}; "
        f"model FLOPs/step: ours {step_flops['ours']:.3g}, peer {step_flops['peer']:.3g}"
    )
    summaries = common.alternate(contenders, warmup=2, repeats=args.repeats)
    rows = []
    for (name, summary), flops in zip(summaries.items(), step_flops.values(), strict=False):
        step_s = summary.wall_s / args.steps
        loss = summary.timings[-1].counts["loss"]
        rows.append(
            [
                name,
                1000 * step_s,
                tokens_per_step / step_s,
                flops / step_s / 1e9,
                summary.cores_busy,
                loss,
            ]
        )
    common.print_table(
        ["contender", "step ms", "tokens/s", "GFLOP/s", "cores busy", "loss (last step)"], rows
    )
    if device is None:
        print(f"ratio (ours / peer): n/a  [peer not run: {device_note}]")
        return
    ours_s, peer_s = (s.wall_s for s in summaries.values())
    common.print_ratio(
        step_flops["ours"] / ours_s, step_flops["peer"] / peer_s, f"{args.model} model FLOP/s"
    )
    # Last, the line the smoke test and README read: per step (tokens/s).
    common.print_ratio(1 / ours_s, 1 / peer_s, f"{args.model} training tokens/s")


if __name__ == "__main__":
    main()
