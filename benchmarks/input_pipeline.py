"""BERT example throughput: our grain pipeline vs Hugging Face's MLM data collator.

  python -m benchmarks.input_pipeline                    # configs/bert.py:recipe=short, 32 x 128
  python -m benchmarks.input_pipeline --repeats=5 --num_batches=128
  python -m benchmarks.input_pipeline --smoke            # seconds; for the test suite

Two like-for-like starting points, each printing a ratio:

  raw text   ours: `pipeline.create_dataset` on data/c4_sample (json.gz reading, sentence
             splitting, sentencepiece, NSP pairs, 80/10/10 masking of up to 20 positions,
             padding, window shuffle, batching); worker_count=0 and prefetch=0, so all of
             it runs in this process's main thread.
             peer: `transformers.PreTrainedTokenizerFast` converted from the same
             data/vocab/spm.model, run_mlm.py's recipe (tokenize 32 documents per call with
             [CLS] ... [SEP] and special_tokens_mask, concatenate, cut into 128-token
             blocks) and `DataCollatorForLanguageModeling(mlm_probability=0.15)` on
             batches of 32 blocks.
  token ids  ours: the same grain stages after tokenization, fed the documents
             pre-tokenized with our sentencepiece (benchmarks.common.pipeline_from_documents).
             peer: the collator alone on 32 x 128 blocks of the same token ids, given as
             run_mlm.py gives them ({'input_ids', 'special_tokens_mask'} dicts) and as
             plain id lists; the faster of the two is the peer.

  shards     ours: `pipeline.create_dataset` with config.data.source=tokenized, reading the
             train split from pre-tokenised ArrayRecord shards (`make tokenized`, or
             prepared on the fly): no json, no sentencepiece. peer: as for token ids.

The peer does less work than ours (no sentence pairs, no NSP labels, no padding, no
fixed-size prediction lists) and ours counts only real tokens (input_mask), never padding.
"Per core" divides by the process's CPU seconds (all threads), so multi-threaded Rust
tokenization or torch ops are charged for every core they use.
"""

from __future__ import annotations

import itertools

import numpy as np

from benchmarks import common

CONFIG_NOTE = "configs/bert.py:recipe=short (tiny, MLM 15% + NSP), max_seq_length 128"
OURS = "ours (grain pipeline)"
# Diagnostic row, not in the ratio: ours without grain (examples_from_documents + np.stack).
OBJECTIVE_ONLY = "(diagnostic) ours: objective + np.stack, no grain"


def hf_tokenizer(vocab_path: str):
    """A fast HF tokenizer with our sentencepiece model's pieces and ids, adding [CLS] .. [SEP]."""
    import tokenizers
    import transformers

    from bert_jax.export import hf

    # Byte fallback included: our model falls back to bytes, like sentencepiece does.
    backend = hf.spm_backend(vocab_path)
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 3), ("[SEP]", 4)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        eos_token="</s>",
    )


def hf_batches_from_texts(texts, tokenizer, collator, *, docs_per_call, seq_len, batch_size):
    """run_mlm.py without `datasets`: tokenize, concatenate, cut into blocks, collate."""
    pending = []
    for start in itertools.cycle(range(0, len(texts), docs_per_call)):
        encoded = tokenizer(texts[start : start + docs_per_call], return_special_tokens_mask=True)
        joined = {k: list(itertools.chain.from_iterable(v)) for k, v in encoded.items()}
        total = len(joined["input_ids"]) // seq_len * seq_len  # run_mlm drops the remainder
        for begin in range(0, total, seq_len):
            pending.append({k: v[begin : begin + seq_len] for k, v in joined.items()})
        while len(pending) >= batch_size:
            yield collator(pending[:batch_size])
            del pending[:batch_size]


def id_blocks(documents, *, cls_id: int, sep_id: int, seq_len: int) -> np.ndarray:
    """[CLS] document [SEP] for every pre-tokenized document, concatenated, cut into blocks."""
    stream = np.concatenate([np.concatenate([[cls_id], *doc, [sep_id]]) for doc in documents])
    return stream[: len(stream) // seq_len * seq_len].reshape(-1, seq_len)  # [blocks, seq_len]


def hf_batches_from_ids(blocks: np.ndarray, collator, *, batch_size, special_ids, as_dicts):
    """The collator alone, cycling over pre-built blocks of token ids."""
    specials = np.isin(blocks, special_ids).astype(np.int64)
    if as_dicts:
        examples = [
            {"input_ids": ids.tolist(), "special_tokens_mask": mask.tolist()}
            for ids, mask in zip(blocks, specials, strict=True)
        ]
    else:
        examples = [ids.tolist() for ids in blocks]
    usable = len(examples) // batch_size * batch_size
    for start in itertools.cycle(range(0, usable, batch_size)):
        yield collator(examples[start : start + batch_size])


def count_ours(batch):
    return batch["input_ids"].shape[0], float(batch["input_mask"].sum())


def count_hf(batch):
    ids = batch["input_ids"]
    return ids.shape[0], float(ids.shape[0] * ids.shape[1])  # blocks are full: no padding


def build_contenders(
    variant,
    *,
    config,
    objective,
    tokenizer,
    hf_tok,
    collator,
    texts,
    documents,
    batch_size,
    num_batches,
):
    """{name: timed callable} for one starting point: ours first, then the peers."""
    from bert_jax.data import pipeline

    if variant not in ("raw", "ids", "shards"):
        raise ValueError(f"--variants: unknown variant {variant!r} (raw, ids, shards)")
    seq_len = config.data.max_seq_length
    if variant in ("raw", "shards"):
        ours = pipeline.create_dataset(
            common.tokenized_config(config) if variant == "shards" else config,
            objective,
            tokenizer,
            split="train",
            global_batch_size=batch_size,
            process_index=0,
            process_count=1,
        )
    if variant == "raw":
        peers = {
            "HF fast tokenizer + run_mlm blocks + collator": hf_batches_from_texts(
                texts,
                hf_tok,
                collator,
                docs_per_call=config.data.docs_per_group,
                seq_len=seq_len,
                batch_size=batch_size,
            )
        }
    if variant in ("ids", "shards"):
        if variant == "ids":
            ours = common.pipeline_from_documents(
                config, objective, documents, global_batch_size=batch_size
            )
        blocks = id_blocks(
            documents, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, seq_len=seq_len
        )
        peers = {
            f"HF collator, {kind}": hf_batches_from_ids(
                blocks,
                collator,
                batch_size=batch_size,
                special_ids=tokenizer.special_ids,
                as_dicts=kind == "dicts + special_tokens_mask",
            )
            for kind in ("dicts + special_tokens_mask", "plain id lists")
        }
    contenders = {OURS: common.drain(iter(ours), num_batches, count_ours)}
    contenders.update({name: common.drain(it, num_batches, count_hf) for name, it in peers.items()})
    if variant == "ids":
        stacked = (
            {k: np.stack([e[k] for e in examples]) for k in examples[0]}
            for examples in common.objective_batches(
                objective,
                documents,
                docs_per_group=config.data.docs_per_group,
                batch_size=batch_size,
                seed=config.seed,
            )
        )
        contenders[OBJECTIVE_ONLY] = common.drain(stacked, num_batches, count_ours)
    return contenders


def main(argv=None) -> None:
    parser = common.pipeline_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--variants", default="raw,ids,shards", help="comma list of raw, ids, shards"
    )
    args = parser.parse_args(argv)

    import torch
    import transformers

    from bert_jax.data.tokenizer import Tokenizer
    from bert_jax.objectives.bert_task import BertDataConfig, BertObjective

    config, max_documents, num_batches = common.pipeline_recipe("bert", args)
    tokenizer = Tokenizer(config.data.vocab_path)
    objective = BertObjective(BertDataConfig.from_config(config), tokenizer)
    hf_tok = hf_tokenizer(config.data.vocab_path)
    collator = transformers.DataCollatorForLanguageModeling(
        tokenizer=hf_tok, mlm_probability=0.15, seed=config.seed
    )
    texts, documents = common.pretokenized_documents(config, tokenizer, max_documents)

    print(f"machine: {common.machine_info()}")
    print(
        f"config: {CONFIG_NOTE}; batch {args.batch_size}; {num_batches} batches x "
        f"{args.repeats} repeats (median); {len(texts)} train documents; torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}; shuffle window {config.data.shuffle_buffer} examples"
    )
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rows, ratios = [], []
    for variant in variants:
        contenders = build_contenders(
            variant,
            config=config,
            objective=objective,
            tokenizer=tokenizer,
            hf_tok=hf_tok,
            collator=collator,
            texts=texts,
            documents=documents,
            batch_size=args.batch_size,
            num_batches=num_batches,
        )
        summaries = common.alternate(contenders, warmup=1, repeats=args.repeats)
        for name, summary in summaries.items():
            rows.append(
                [
                    variant,
                    name,
                    summary.rate("examples"),
                    summary.rate("tokens"),
                    summary.cores_busy,
                    summary.rate_per_core("tokens"),
                ]
            )
        ours_summary = summaries.pop(OURS)
        summaries.pop(OBJECTIVE_ONLY, None)
        peer = max(summaries.values(), key=lambda s: s.rate_per_core("tokens"))
        ratios.append((variant, ours_summary, peer))

    common.print_table(
        ["start", "contender", "examples/s", "tokens/s", "cores busy", "tokens/s/core"], rows
    )
    for variant, ours_summary, peer in ratios:
        print(
            f"{variant}: ours / {peer.name}: wall tokens/s "
            f"{ours_summary.rate('tokens') / peer.rate('tokens'):.2f}"
        )
        common.print_ratio(
            ours_summary.rate_per_core("tokens"),
            peer.rate_per_core("tokens"),
            f"{variant}: tokens/s per core vs {peer.name}",
        )


if __name__ == "__main__":
    main()
