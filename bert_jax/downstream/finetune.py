"""``bert-jax finetune``: picks the task's builder and runs it through `runner.run`.

``config.finetune.task`` and ``config.finetune.model`` choose the `runner.FinetuneTask`:
SQuAD (`squad_finetune.SquadTask`), T5 text-to-text (``model='t5'``,
`text_to_text.TextToTextTask`), or classification / regression on BERT / ALBERT
(`classification.ClassificationTask`). The encoder starts
from ``config.finetune.init`` (`encoder_init`); results go to
``WORKDIR/finetune_results.json``.
"""

from __future__ import annotations

import ml_collections

from bert_jax.downstream import classification, runner, squad_finetune, text_to_text


def build_task(config: ml_collections.ConfigDict) -> runner.FinetuneTask:
    """The fine-tuning task ``config.finetune`` names."""
    if config.finetune.task in squad_finetune.VERSIONS:
        return squad_finetune.SquadTask(config)
    if config.finetune.model == "t5":
        return text_to_text.TextToTextTask(config)
    return classification.ClassificationTask(config)


def run_finetune(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Fine-tunes in ``workdir`` (resuming if a checkpoint exists); returns the metrics.

    Returns:
      ``train`` / ``eval`` (the train loop's last metrics), ``step``, ``final``
      (official metrics of the final parameters per evaluation split) and ``state``.
    """
    return runner.run(config, workdir, build_task(config))
