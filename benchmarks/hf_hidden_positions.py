"""Hidden-position masked-LM loss of an exported BERT/ALBERT, scored by `transformers` alone.

  bert-jax export --config configs/bert.py --workdir workdirs/bert_tiny --out /tmp/bert_hf
  python -m benchmarks.hf_hidden_positions --hf_dir /tmp/bert_hf --workdir workdirs/bert_tiny

The peer side uses nothing from bert_jax: the validation documents (C4 json lines,
``--eval_pattern``) are tokenized with the export's own ``AutoTokenizer``, cut into
consecutive windows of 126 tokens (``[CLS] window [SEP]``, 128 in all; a document's last
window may be shorter), and in each window ``round(15%)`` of the tokens (at least 1, at
most 20; BERT's budget) are chosen uniformly and *every* one is replaced by ``[MASK]``.
``AutoModelForPreTraining`` from the export scores them: mean cross-entropy (nats) and
accuracy of the original tokens at those positions, pooled over ``--draws`` draws of the
chosen positions (seeds ``--seed``, ``--seed + 1``, ...; one draw of the embedded sample's
35 validation documents moves the figure by a few hundredths of a nat).

Beside it the script prints the project's own held-out figure on hidden positions,
``mlm_mask_loss`` of the last evaluation in ``WORKDIR/metrics.jsonl`` (80/10/10 corruption,
the ``[MASK]`` positions only, over train.eval_batches' fixed draws; bert_eval.py), and
the difference. The two use different windows and draws (sentence-aligned segment pairs
vs plain windows), so they agree only as two estimates of one quantity;
tests/export/test_hidden_positions_hf.py feeds both sides the same batches, where they
agree to float precision.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an export loads offline; never reach a hub

WINDOW = 126  # tokens per window between [CLS] and [SEP]
MASKED_LM_PROB = 0.15
MAX_PREDICTIONS = 20


def read_documents(pattern: str) -> list[str]:
    """Texts of the C4-format ``*.json.gz`` shards matching ``pattern``, in file order."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"--eval_pattern {pattern!r} matches no file")
    documents = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            documents += [json.loads(line)["text"] for line in lines if line.strip()]
    return documents


def build_windows(
    hf_tokenizer,
    documents: list[str],
    *,
    window: int = WINDOW,
    masked_lm_prob: float = MASKED_LM_PROB,
    max_predictions: int = MAX_PREDICTIONS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Held-out windows with every selected position replaced by ``[MASK]``.

    Returns:
      input_ids, token_type_ids, attention_mask [N, window + 2] and positions, labels,
      weights [N, max_predictions] (weight 0 pads a window with fewer predictions).
    """
    special = np.asarray(hf_tokenizer.all_special_ids)
    cls_id, sep_id = hf_tokenizer.cls_token_id, hf_tokenizer.sep_token_id
    mask_id, pad_id = hf_tokenizer.mask_token_id, hf_tokenizer.pad_token_id
    rng = np.random.default_rng(seed)
    rows = {name: [] for name in ("input_ids", "attention_mask", "positions", "labels", "weights")}
    # Whole documents, longer than the model's 512 positions: verbose=False silences that.
    encoded = hf_tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]
    for ids in encoded:
        for start in range(0, len(ids), window):
            piece = np.asarray(ids[start : start + window])
            candidates = np.flatnonzero(~np.isin(piece, special))
            if candidates.size == 0:
                continue
            budget = min(max_predictions, max(1, round(candidates.size * masked_lm_prob)))
            chosen = np.sort(rng.choice(candidates, size=budget, replace=False)) + 1  # + [CLS]
            tokens = np.full(window + 2, pad_id)
            tokens[: piece.size + 2] = [cls_id, *piece, sep_id]  # [window + 2]
            labels = tokens[chosen]
            tokens[chosen] = mask_id
            pad = max_predictions - budget
            rows["input_ids"].append(tokens)
            rows["attention_mask"].append(np.arange(window + 2) < piece.size + 2)
            rows["positions"].append(np.pad(chosen, (0, pad)))
            rows["labels"].append(np.pad(labels, (0, pad)))
            rows["weights"].append(np.arange(max_predictions) < budget)
    if not rows["input_ids"]:
        raise ValueError("the documents gave no window with a token to predict")
    batch = {name: np.stack(values).astype(np.int64) for name, values in rows.items()}
    batch["weights"] = batch["weights"].astype(np.float32)
    batch["token_type_ids"] = np.zeros_like(batch["input_ids"])
    return batch


def score(hf_model, batch: dict[str, np.ndarray], batch_size: int = 32) -> dict[str, float]:
    """Mean cross-entropy (nats), accuracy and count of the weighted predictions.

    Args:
      hf_model: a transformers ``BertForPreTraining`` or ``AlbertForPreTraining``.
      batch: input_ids, token_type_ids, attention_mask [N, L]; positions, labels, weights [N, P].
    """
    import torch

    hf_model.eval()
    xent_sum, correct_sum, count = 0.0, 0.0, 0.0
    for start in range(0, len(batch["input_ids"]), batch_size):
        part = {name: torch.as_tensor(v[start : start + batch_size]) for name, v in batch.items()}
        with torch.no_grad():
            logits = hf_model(
                input_ids=part["input_ids"],
                token_type_ids=part["token_type_ids"],
                attention_mask=part["attention_mask"],
            ).prediction_logits  # [batch, length, vocab]
        index = part["positions"][..., None].expand(-1, -1, logits.shape[-1])
        at_positions = torch.gather(logits, 1, index).double()  # [batch, predictions, vocab]
        log_probs = torch.log_softmax(at_positions, dim=-1)
        xent = -torch.gather(log_probs, -1, part["labels"][..., None])[..., 0]
        correct = (at_positions.argmax(-1) == part["labels"]).double()
        weights = part["weights"].double()
        xent_sum += float((xent * weights).sum())
        correct_sum += float((correct * weights).sum())
        count += float(weights.sum())
    return {"loss": xent_sum / count, "accuracy": correct_sum / count, "count": count}


def project_figure(workdir: str) -> dict:
    """The last held-out evaluation of ``WORKDIR/metrics.jsonl`` (the project's own)."""
    from bert_jax.cli import report

    evals = [r for r in report.read_metrics(workdir) if r["split"] == "eval"]
    if not evals or "mlm_mask_loss" not in evals[-1]:
        raise ValueError(f"{workdir}/metrics.jsonl holds no evaluation with mlm_mask_loss")
    return evals[-1]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf_dir", required=True, help="a `bert-jax export` directory")
    parser.add_argument("--eval_pattern", default="data/c4_sample/c4-validation.*.json.gz")
    parser.add_argument("--workdir", help="the pretraining workdir, for its own mlm_mask_loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=3, help="draws of positions, pooled")
    args = parser.parse_args(argv)

    import transformers

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(args.hf_dir)
    hf_model = transformers.AutoModelForPreTraining.from_pretrained(args.hf_dir)
    documents = read_documents(args.eval_pattern)
    draws = [
        build_windows(hf_tokenizer, documents, seed=args.seed + draw) for draw in range(args.draws)
    ]
    windows = {name: np.concatenate([d[name] for d in draws]) for name in draws[0]}
    figures = score(hf_model, windows)
    print(
        f"transformers ({type(hf_model).__name__}), every selected position [MASK]: loss "
        f"{figures['loss']:.4f} nats, accuracy {100 * figures['accuracy']:.2f}% over "
        f"{figures['count']:.0f} positions in {len(windows['input_ids'])} windows of {WINDOW} "
        f"({args.draws} draws)"
    )
    if args.workdir:
        ours = project_figure(args.workdir)
        figures["project_mlm_mask_loss"] = ours["mlm_mask_loss"]
        figures["difference"] = figures["loss"] - ours["mlm_mask_loss"]
        print(
            f"project held-out mlm_mask_loss (step {ours['step']}): {ours['mlm_mask_loss']:.4f} "
            f"nats, accuracy {100 * ours['mlm_mask_accuracy']:.2f}% over "
            f"{ours.get('mlm_mask_count', float('nan')):.0f} positions"
        )
        print(f"difference (transformers - project): {figures['difference']:+.4f} nats")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
