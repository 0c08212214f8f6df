"""BERT pretraining: masked LM (80/10/10) + next-sentence prediction on C4.

The default is the CPU recipe that `make pretrain` runs on the embedded C4
sample (a tiny BERT, about 10 minutes on 2 cores):

  bert-jax pretrain --config configs/bert.py --workdir workdirs/bert_tiny

Variants are picked after a colon, overrides with --config.*:

  bert-jax pretrain --config configs/bert.py:size=base,recipe=paper \
      --config.data.train_pattern='/data/c4/en/3.0.1/c4-train.*.json.gz' \
      --config.mesh.shape='(-1,1,1)' --workdir gs://bucket/bert_base

  recipe=cpu     default: fast tiny run that gets past the unigram plateau
  recipe=long    about an hour on 2 cores (the learning curve in README.md)
  recipe=paper   Devlin et al.: batch 256, 1M steps, lr 1e-4, 10k warmup
  runlocal       a few steps, for smoke tests
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bert_jax.run_config import base_config, check_args, parse_arg, shrink_for_local_run


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = parse_arg(arg)
    config = base_config()

    config.model = ml_collections.ConfigDict()
    config.model.name = "bert"  # bert | albert | t5 (selects model, loss and example builder)
    config.model.size = args.get("size", "tiny")  # tiny | mini | small | base | large
    # Optional overrides of the size preset (None keeps the preset's value).
    config.model.num_layers = config_dict.placeholder(int)
    config.model.hidden_size = config_dict.placeholder(int)
    config.model.num_heads = config_dict.placeholder(int)
    config.model.intermediate_size = config_dict.placeholder(int)
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1
    config.model.dtype = "float32"  # activations; bfloat16 on GPU/TPU
    config.model.param_dtype = "float32"  # parameter storage; float32 unless memory-bound
    config.model.attention = "dot_product"  # dot_product (jax.nn.dot_product_attention) | explicit
    config.model.remat_policy = "none"  # none | full | dots_saveable | minimal (per layer)
    config.model.scan_layers = False  # nnx.scan over layers stacked on a 'layers' axis

    config.objective = ml_collections.ConfigDict()
    config.objective.name = "bert"
    config.objective.sentence_pair_task = "nsp"  # nsp | sop | none
    config.objective.masked_lm_prob = 0.15
    config.objective.max_predictions_per_seq = 20
    config.objective.short_seq_prob = 0.1
    config.objective.whole_word_masking = False
    config.objective.max_ngram = 1  # 3 for ALBERT's n-gram masking

    recipe = args.get("recipe", "cpu")
    if recipe == "cpu":
        # Tiny BERTs sit on a unigram plateau for a while; a high learning rate,
        # no dropout and many small fast steps get past it in about 8 minutes.
        config.train.batch_size = 32
        config.train.num_steps = 2500
        config.train.eval_every = 500
        config.train.checkpoint_every = 500
        config.optim.learning_rate = 1e-3
        config.optim.warmup_steps = 250
        config.model.dropout_rate = 0.0
        config.model.attention_dropout_rate = 0.0
    elif recipe == "long":
        # About an hour on 2 CPU cores: the learning curve in README.md.
        config.train.batch_size = 32
        config.train.num_steps = 15000
        config.train.eval_every = 1000
        config.train.checkpoint_every = 2500
        config.optim.learning_rate = 1e-3
        config.optim.warmup_steps = 500
        config.model.dropout_rate = 0.0
        config.model.attention_dropout_rate = 0.0
    elif recipe == "paper":
        config.train.batch_size = 256
        config.train.num_steps = 1_000_000
        config.train.eval_every = 10_000
        config.train.checkpoint_every = 10_000
        config.train.keep_checkpoints = 5
        config.optim.learning_rate = 1e-4
        config.optim.warmup_steps = 10_000
        config.objective.max_predictions_per_seq = 20
    else:
        raise ValueError(f"configs/bert.py: unknown recipe={recipe!r} (cpu | long | paper)")

    if "runlocal" in args:
        shrink_for_local_run(config)
    check_args(args, ("size", "recipe", "runlocal"), "configs/bert.py")
    return config
