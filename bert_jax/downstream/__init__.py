"""Downstream fine-tuning and evaluation of pretrained encoders.

- `glue`: the nine GLUE tasks (label sets, official metrics) and their readers:
  GLUE TSV folders and TFDS ``glue/*`` prepared in array_record.
- `rotten_tomatoes`: the embedded default task (movie-review snippets, fresh/rotten).
- `squad`: SQuAD v1.1 / v2.0 reader, windowed features with character offsets,
  n-best span decoding.
- `metrics`: the official metrics (GLUE's, and the SQuAD EM/F1 scripts' semantics).
- `encoder_init`: where the encoder starts: our pretraining checkpoint, a Hugging
  Face directory, or random.
- `classifier`: sequence classification / regression head on
  `bert_jax.models.bert.BertModel` and its loss.
- `finetune` (classification, ``run_finetune``), `squad_finetune` (span extraction)
  and `text_to_text` (T5): a `bert_jax.objectives.Task` each, run by the one train
  loop, `bert_jax.train.train_and_evaluate`.

Run with ``bert-jax finetune --config configs/finetune.py:task=sst2,init=hf ...``.
"""
