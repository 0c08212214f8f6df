"""T5 pretraining: encoder-decoder with span corruption or any T5 paper objective.

  bert-jax pretrain --config configs/t5.py --workdir workdirs/t5_tiny
  bert-jax pretrain --config configs/t5.py:size=base,variant=v1_0,recipe=paper --workdir ...

Objectives (Raffel et al. section 3.3) are presets of one transform, chosen by
--config.objective.name; the None fields below keep the preset's value:

  span_corruption (default) | iid_replace_spans | bert_style | mass_style |
  drop_tokens | prefix_lm | deshuffling | iid_{10,25,50}_u_u | span_{2,3,5,10}_15_u_u

  --config.objective.noise_density=0.25 --config.objective.mean_noise_span_length=5
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bert_jax.runtime import run_config

# Training length, batch and schedule of each recipe= (dotted config keys).
RECIPES = {
    "cpu": {
        "train.batch_size": 32,
        "train.num_steps": 2000,
        "train.eval_every": 250,
        "train.checkpoint_every": 1000,
        "optim.learning_rate": 0.01,
        "optim.warmup_steps": 100,
    },
    # Raffel et al.: 2^19 steps of 128 x 512 tokens, inverse sqrt with 10k warmup.
    "paper": {
        "data.max_seq_length": 512,
        "train.batch_size": 128,
        "train.num_steps": 524_288,
        "train.eval_every": 10_000,
        "train.checkpoint_every": 10_000,
        "optim.learning_rate": 0.01,
        "optim.warmup_steps": 10_000,
    },
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = run_config.parse_arg(arg)
    config = run_config.base_config()
    config.data.max_seq_length = 128  # encoder input length (the paper: 512)

    config.model = ml_collections.ConfigDict()
    config.model.name = "t5"
    config.model.size = args.get("size", "tiny")  # tiny | small | base | large
    config.model.variant = args.get("variant", "v1_1")  # v1_0 (ReLU, tied) | v1_1 (gated GELU)
    config.model.d_model = config_dict.placeholder(int)
    config.model.num_heads = config_dict.placeholder(int)
    config.model.d_ff = config_dict.placeholder(int)
    config.model.num_encoder_layers = config_dict.placeholder(int)
    config.model.num_decoder_layers = config_dict.placeholder(int)
    config.model.dropout_rate = 0.0  # T5 v1.1 pretrains without dropout
    config.model.dtype = "float32"  # activations and matmuls; bfloat16 on GPU/TPU
    config.model.param_dtype = "float32"  # parameter storage; float32 unless memory-bound
    config.model.attention = "dot_product"  # dot_product (jax.nn.dot_product_attention) | explicit
    config.model.remat_policy = "none"  # none | full | dots_saveable | minimal (per layer)
    config.model.scan_layers = False  # nnx.scan over layers stacked on a 'layers' axis

    config.objective = ml_collections.ConfigDict()
    config.objective.name = "span_corruption"
    config.objective.extra_ids = 100  # sentinels <extra_id_0..99> after the sentencepiece ids
    config.objective.noise_mask = config_dict.placeholder(str)  # spans | iid | prefix
    config.objective.noise_density = config_dict.placeholder(float)
    config.objective.mean_noise_span_length = config_dict.placeholder(float)
    config.objective.inputs_fn = config_dict.placeholder(str)
    config.objective.targets_fn = config_dict.placeholder(str)
    config.objective.random_token_prob = config_dict.placeholder(float)
    config.objective.targets_length = config_dict.placeholder(int)
    config.objective.pack = True  # several examples per row, segment-masked attention
    config.objective.concat_documents = config_dict.placeholder(bool)
    config.objective.num_packing_bins = config_dict.placeholder(int)
    config.objective.z_loss = 1e-4  # t5x's auxiliary log(Z)^2 loss

    config.optim.name = "adafactor"
    config.optim.schedule = "rsqrt"
    config.optim.weight_decay = 0.0
    config.optim.grad_clip_norm = 0.0  # Adafactor clips its own updates

    run_config.apply_recipe(config, RECIPES, args.get("recipe", "cpu"), "configs/t5.py")

    if "runlocal" in args:
        run_config.shrink_for_local_run(config)
    run_config.check_args(args, ("size", "variant", "recipe", "runlocal"), "configs/t5.py")
    return config
