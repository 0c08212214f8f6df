"""Fields every recipe shares, and the helpers the files under configs/ use.

Recipes live in configs/*.py as ``get_config(arg)``; they start from
``base_config()`` so a reader finds every default in two files at most.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from bert_jax.runtime import sharding


def parse_arg(arg: str) -> dict[str, str]:
    """Parses 'size=base,recipe=paper,runlocal' into a dict (flags map to '1')."""
    out = {}
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip() if value else "1"
    return out


def base_config() -> ml_collections.ConfigDict:
    """Fields shared by every recipe (BERT, ALBERT and T5 configs start here)."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # jsonl (C4 *.json.gz shards) | tfds | text | tokenized (data_prep.tokenize_shards output:
    # the patterns then name the shards, e.g. data/c4_tokenized/train/*.array_record)
    config.data.source = "jsonl"
    config.data.train_pattern = "data/c4_sample/c4-train.*.json.gz"
    config.data.eval_pattern = "data/c4_sample/c4-validation.*.json.gz"
    config.data.tfds_name = ""  # e.g. 'c4/en:3.1.0' or 'c4_shards' (array_record format)
    config.data.tfds_data_dir = ""
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.text_field = "text"
    config.data.vocab_path = "data/vocab/spm.model"
    config.data.max_seq_length = 128
    config.data.docs_per_group = 32  # documents an example builder sees at once
    config.data.shuffle_buffer = 2048  # examples
    config.data.cycle_length = 4  # jsonl shards read at once (interleaved)
    config.data.worker_count = 0  # grain worker processes (0: in the main process)
    config.data.read_threads = 0  # source=tokenized: reader threads (a few for network disks)
    config.data.prefetch = 4  # batches prefetched by a thread when worker_count == 0
    # Streams the corpus is split into, each filling its slice of every global batch and
    # shared out among the hosts; fixed, it makes the batches independent of the host
    # count (a multiple of it). 0: one stream per host.
    config.data.input_shards = 0
    # Bad records (invalid JSON or UTF-8, empty texts, no sentence) are skipped and counted;
    # once 1000 are read, a larger fraction skipped stops the run (>= 1: never).
    config.data.max_skipped_fraction = 0.5
    # A resume whose train data differs from the checkpoint's (source, files, sequence length,
    # ...: bert_jax/data/fingerprint.py) is refused; True restarts the data stream instead.
    config.data.allow_new_data = False

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64  # global, across all hosts
    # Microbatches per step (one optimizer update over their summed gradients), so a
    # large global batch fits: batch_size must divide by this times data*fsdp devices.
    config.train.gradient_accumulation_steps = 1
    config.train.num_steps = 1000
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.eval_batches = 20  # fixed held-out batches per evaluation
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    # A step whose loss, gradients or update is non-finite is never applied (finite_guard.py);
    # stop: end the run at the next report, naming the last good checkpoint; skip: go on,
    # counting them (metric nonfinite_skipped), and stop after max_nonfinite_steps in a row.
    config.train.nonfinite_policy = "stop"
    config.train.max_nonfinite_steps = 10
    # After SIGTERM / Ctrl-C the loop stops at the next step with a checkpoint (exit 75);
    # no step within this many seconds (a stuck reader, a long compile) exits at once.
    config.train.stop_grace_s = 60.0

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adamw"  # adamw | lamb | adafactor
    config.optim.learning_rate = 1e-4
    config.optim.schedule = "linear"  # linear | cosine | rsqrt | constant
    config.optim.warmup_steps = 100
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-6
    config.optim.weight_decay = 0.01
    config.optim.grad_clip_norm = 1.0

    config.mesh = ml_collections.ConfigDict()
    # dp | fsdp | fsdp_tp fills shape and axis_rules (bert_jax/runtime/sharding.py PRESET_RULES);
    # '' uses the two fields below as given.
    config.mesh.preset = ""
    config.mesh.tensor_parallelism = 1  # size of the tensor axis for preset=fsdp_tp
    # Sizes of the ('data', 'fsdp', 'tensor') mesh axes; -1 takes the remaining devices.
    config.mesh.shape = (-1, 1, 1)
    config.mesh.axis_rules = sharding.DEFAULT_RULES

    # Multi-host start-up (bert_jax/runtime/distributed.py); the coordinator, process count and
    # id come from --coordinator_address/--num_processes/--process_id or the environment.
    config.distributed = ml_collections.ConfigDict()
    config.distributed.init_timeout_s = 300  # every process must join by then, else exit 1
    config.distributed.heartbeat_timeout_s = 100  # a silent peer after start-up stops the run
    config.distributed.auto_detect = True  # SLURM / Open MPI / Cloud TPU slice: no flags needed
    return config


def check_args(args: dict[str, str], allowed: tuple[str, ...], recipe_file: str) -> None:
    """Rejects misspelt ``--config FILE:ARG`` arguments by name."""
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ValueError(f"{recipe_file}: unknown config argument(s) {unknown}; know {allowed}")


def apply_recipe(
    config: ml_collections.ConfigDict,
    recipes: Mapping[str, Mapping[str, Any]],
    name: str,
    recipe_file: str,
) -> None:
    """Sets the ``{"section.key": value}`` overrides of recipe ``name`` (a table in configs/).

    Raises:
      ValueError: ``name`` is not in ``recipes``, or a key names no field of ``config``.
    """
    if name not in recipes:
        raise ValueError(f"{recipe_file}: unknown recipe={name!r} ({' | '.join(recipes)})")
    for dotted, value in recipes[name].items():
        set_field(config, dotted, value, f"{recipe_file}: recipe {name!r}")


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any, origin: str) -> None:
    """``config.<dotted> = value`` for an existing field; a typo would add a dead key.

    Raises:
      ValueError: ``dotted`` names no field of ``config``, with ``origin`` (who set it).
    """
    *sections, field = dotted.split(".")
    node = config
    for section in sections:
        if section not in node or not isinstance(node[section], ml_collections.ConfigDict):
            raise ValueError(f"{origin} sets unknown field {dotted!r}")
        node = node[section]
    if field not in node:
        raise ValueError(f"{origin} sets unknown field {dotted!r}")
    node[field] = value


def shrink_for_local_run(config: ml_collections.ConfigDict) -> None:
    """The ``runlocal`` variant: a few tiny steps that exercise every stage."""
    config.train.batch_size = 8
    config.train.num_steps = 4
    config.train.log_every = 1
    config.train.eval_every = 4
    config.train.eval_batches = 2
    config.train.checkpoint_every = 2
    config.data.shuffle_buffer = 64
    config.data.docs_per_group = 8


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_recipe(
    spec: str, *, data_root: str | os.PathLike | None = None
) -> ml_collections.ConfigDict:
    """``configs/bert.py`` or ``configs/bert.py:size=mini,runlocal`` as a ConfigDict.

    The path is taken relative to the working directory, else to the repository.
    With ``data_root`` the data paths point at ``DATA_ROOT/c4_sample`` and
    ``DATA_ROOT/vocab/spm.model`` (absolute), as `make corpus vocab` lays them out.

    Raises:
      FileNotFoundError: naming the recipe file that does not exist.
    """
    path, _, arg = os.fspath(spec).partition(":")
    if not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
        path = os.path.join(REPO_ROOT, path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"recipe {path!r} not found")
    module_spec = importlib.util.spec_from_file_location(
        f"recipe_{os.path.basename(path)[:-3]}", path
    )
    recipe = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(recipe)
    config = recipe.get_config(arg)
    if data_root is not None:
        root = os.path.abspath(data_root)
        config.data.train_pattern = os.path.join(root, "c4_sample", "c4-train.*.json.gz")
        config.data.eval_pattern = os.path.join(root, "c4_sample", "c4-validation.*.json.gz")
        config.data.vocab_path = os.path.join(root, "vocab", "spm.model")
    return config
