"""ALBERT pretraining: masked LM with n-gram masking + sentence-order prediction.

ALBERT is a configuration of the BERT encoder (factorised embeddings E != H,
cross-layer parameter sharing) and of the BERT example builder (SOP instead of
NSP, whole-word n-gram masking), trained with LAMB:

  bert-jax pretrain --config configs/albert.py --workdir workdirs/albert_tiny
  bert-jax pretrain --config configs/albert.py:size=base,recipe=paper --workdir ...
  bert-jax evaluate --config configs/albert.py --workdir workdirs/albert_tiny

  --config.objective.sentence_pair_task=nsp|sop|none   the Table 5 ablation
  --config.model.share_mode=all|attention|ffn|none     cross-layer sharing
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bert_jax.runtime import run_config

# Training length, batch and schedule of each recipe= (dotted config keys).
RECIPES = {
    # Short segments make sentence order learnable by a tiny model in minutes:
    # at length 128 held-out SOP accuracy stays near chance for 10k+ steps.
    "cpu": {
        "data.max_seq_length": 64,
        "objective.max_predictions_per_seq": 10,
        "train.batch_size": 64,
        "train.num_steps": 2500,
        "train.eval_every": 500,
        "train.checkpoint_every": 500,
        "optim.learning_rate": 5e-3,
        "optim.warmup_steps": 200,
    },
    # Lan et al.: batch 4096, LAMB lr 0.00176, 125k steps, length 512.
    "paper": {
        "train.batch_size": 4096,
        "train.num_steps": 125_000,
        "train.eval_every": 5_000,
        "train.checkpoint_every": 5_000,
        "data.max_seq_length": 512,
        "optim.learning_rate": 0.00176,
        "optim.warmup_steps": 3125,
    },
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = run_config.parse_arg(arg)
    config = run_config.base_config()

    config.model = ml_collections.ConfigDict()
    config.model.name = "albert"
    config.model.size = args.get("size", "tiny")  # tiny | base | large | xlarge
    config.model.num_layers = config_dict.placeholder(int)
    config.model.hidden_size = config_dict.placeholder(int)
    config.model.num_heads = config_dict.placeholder(int)
    config.model.intermediate_size = config_dict.placeholder(int)
    config.model.embedding_size = config_dict.placeholder(int)  # E; 128 in every ALBERT size
    config.model.share_mode = "all"  # all | attention | ffn | none
    config.model.num_groups = 1  # ALBERT's num_hidden_groups
    # ALBERT v2 trains without dropout.
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0
    config.model.dtype = "float32"  # activations and matmuls; bfloat16 on GPU/TPU
    config.model.param_dtype = "float32"  # parameter storage; float32 unless memory-bound
    config.model.attention = "dot_product"  # dot_product (jax.nn.dot_product_attention) | explicit
    config.model.remat_policy = "none"  # none | full | dots_saveable | minimal (per layer)
    config.model.scan_layers = False  # share_mode all, 1 group: scan the shared layer

    config.objective = ml_collections.ConfigDict()
    config.objective.name = "bert"
    config.objective.sentence_pair_task = "sop"  # sop | nsp | none
    config.objective.masked_lm_prob = 0.15
    # Held-out masking rate (None: masked_lm_prob). Held-out figures stay at BERT's 15% when
    # a recipe trains at another rate, so they compare across recipes and with the papers.
    config.objective.eval_masked_lm_prob = config_dict.placeholder(float)
    config.objective.max_predictions_per_seq = 20
    config.objective.short_seq_prob = 0.1
    config.objective.whole_word_masking = True
    config.objective.max_ngram = 3  # spans of 1-3 words, p(n) proportional to 1/n
    # True: train on each consecutive pair in both orders (ALBERT: a coin flip per pair).
    config.objective.sop_both_orders = False

    config.optim.name = "lamb"
    config.optim.weight_decay = 0.01

    run_config.apply_recipe(config, RECIPES, args.get("recipe", "cpu"), "configs/albert.py")

    if "runlocal" in args:
        run_config.shrink_for_local_run(config)
    run_config.check_args(args, ("size", "recipe", "runlocal"), "configs/albert.py")
    return config
