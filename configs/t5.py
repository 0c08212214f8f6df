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

from bert_jax.run_config import base_config, check_args, parse_arg, shrink_for_local_run


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = parse_arg(arg)
    config = base_config()
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
    config.objective.z_loss = 1e-4  # t5x's auxiliary log(Z)^2 loss

    config.optim.name = "adafactor"
    config.optim.schedule = "rsqrt"
    config.optim.weight_decay = 0.0
    config.optim.grad_clip_norm = 0.0  # Adafactor clips its own updates

    recipe = args.get("recipe", "cpu")
    if recipe == "cpu":
        config.train.batch_size = 32
        config.train.num_steps = 2000
        config.train.eval_every = 250
        config.train.checkpoint_every = 1000
        config.optim.learning_rate = 0.01
        config.optim.warmup_steps = 100
    elif recipe == "paper":
        # Raffel et al.: 2^19 steps of 128 x 512 tokens, inverse sqrt with 10k warmup.
        config.data.max_seq_length = 512
        config.train.batch_size = 128
        config.train.num_steps = 524_288
        config.train.eval_every = 10_000
        config.train.checkpoint_every = 10_000
        config.optim.learning_rate = 0.01
        config.optim.warmup_steps = 10_000
    else:
        raise ValueError(f"configs/t5.py: unknown recipe={recipe!r} (cpu | paper)")

    if "runlocal" in args:
        shrink_for_local_run(config)
    check_args(args, ("size", "variant", "recipe", "runlocal"), "configs/t5.py")
    return config
