"""Downstream fine-tuning and evaluation of pretrained encoders: one pipeline.

- `runner`: the task type, `FinetuneTask` (an `objectives.Task`, the train loop's
  contract, plus ``predict_batch`` and ``score``), `predict`, and `run`: build -> train
  (the pretraining loop, `bert_jax.training.loop.train_and_evaluate`) -> predict -> score
  -> write.
- `batching`: the one ``Task.batches`` of fine-tuning: indexed rows, shuffled for training, padded
  single passes for evaluation.
- The tasks, each a `FinetuneTask` subclass: `classification.ClassificationTask` (GLUE
  and Rotten Tomatoes on BERT / ALBERT, STS-B regression included),
  `squad_finetune.SquadTask` (span extraction) and `text_to_text.TextToTextTask` (T5).
  `finetune.run_finetune` (``bert-jax finetune``) picks one.
- `encoder_init`: where the encoder starts: our pretraining checkpoint, a Hugging
  Face directory, or random.
- `classifier`: sequence classification / regression head on
  `bert_jax.models.bert.BertModel`, its loss and additive evaluation sums.
- Readers: `glue` (the nine GLUE tasks' label sets and metrics; GLUE TSV folders and
  TFDS ``glue/*``), `rotten_tomatoes` (the embedded default task), `squad` (SQuAD
  v1.1 / v2.0, windowed features, n-best span decoding), `squad_tokenize`.
- `metrics`: the official metrics (GLUE's, and the SQuAD EM/F1 scripts' semantics).

Run with ``bert-jax finetune --config configs/finetune.py:task=sst2,init=hf ...``.
"""
