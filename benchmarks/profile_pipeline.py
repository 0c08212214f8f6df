"""Where a batch's time goes: cProfile of our input pipeline, by stage.

  python -m benchmarks.profile_pipeline --family=bert --start=ids
  python -m benchmarks.profile_pipeline --family=t5 --start=raw --num_batches=64

Builds the pipeline of `benchmarks.input_pipeline` / `benchmarks.span_corruption`
(configs/bert.py or configs/t5.py, batch 32, worker_count=0, prefetch=0) from token ids
(`ids`), raw json.gz text (`raw`) or pre-tokenised shards (`shards`), pulls one shuffle
window of batches untimed, then profiles `--num_batches` batches with cProfile on process
CPU time. Prints the CPU milliseconds per batch and, per stage, the cumulative time of
the function that implements it (stages nest: the objective stage includes its parts).
cProfile inflates Python call overhead, so read the shares, not the absolute times.
Not a benchmark (no peer, no ratio): benchmarks/README.md keeps its before/after output.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from benchmarks import common
from bert_jax.data import window_shuffle

# (label, a substring of the file, function name) or (label, the function itself, for two
# methods of one file with one name); missing stages are not printed.
STAGES = [
    ("json lines reading", "jsonl_source.py", "_read_line"),
    ("json parsing", "jsonl_source.py", "parse_json_line"),
    ("sentence split + sentencepiece", "tokenizer.py", "encode_document"),
    ("ArrayRecord reads", "array_record_data_source.py", "__getitems__"),
    ("record decode", "tokenized_source.py", "decode_record"),
    ("objective stage (grain flat map, all of it)", "transformations/flatmap.py", "__next__"),
    ("objective stage (a group's chunk of examples)", "bert_jax/data/pipeline.py", "map"),
    ("  BERT: example block (rows as arrays)", "bert_task.py", "example_block"),
    ("  BERT: sentence pairs", "sentence_pairs.py", "create_segment_pairs"),
    ("  BERT: [CLS] A [SEP] B layout", "sentence_pairs.py", "build_bert_inputs"),
    ("  BERT: masking", "masking.py", "mask_tokens"),
    ("  T5: examples_from_documents", "t5_data.py", "examples_from_documents"),
    ("    T5: noise masks, chunk by chunk", "span_corruption.py", "random_spans_noise_mask"),
    ("    T5: noise masks, all chunks", "span_corruption.py", "random_spans_noise_masks"),
    ("    T5: denoise, chunk by chunk", "t5_data.py", "denoise"),
    ("T5: grain FirstFitPack (incl. upstream)", "transformations/packing.py", "__next__"),
    ("T5: packed rows -> t5x features", "bert_jax/data/packing.py", "packed_to_t5x_features"),
    ("T5: first-fit packing per buffer", "bert_jax/data/packing.py", "__call__"),
    ("window shuffle: grain index_shuffle", "transformations/shuffle.py", "_reshuffle_window"),
    ("window shuffle: NumPy permutation", window_shuffle._PermuteWindow.__call__),
    ("buffered stages: taking chunks (cut across chunks)", "window_shuffle.py", "_take_chunks"),
    ("batch: rows of a buffer (`batch_rows`)", window_shuffle._StackBatch.__call__),
    ("batch (np.stack)", "shape_base.py", "stack"),
]


def _is_stage(key: tuple[str, int, str], where: list) -> bool:
    file, line, name = key
    if len(where) == 1:  # a function object
        code = where[0].__code__
        return (file, line, name) == (code.co_filename, code.co_firstlineno, code.co_name)
    file_part, function = where
    return file_part in file and name == function


def build(family: str, start: str):
    from bert_jax.data import pipeline
    from bert_jax.data.tokenizer import Tokenizer

    config = common.load_recipe(family)
    config.data.worker_count = 0
    config.data.prefetch = 0
    if family == "bert":
        from bert_jax.objectives.bert_task import BertDataConfig, BertObjective

        tokenizer = Tokenizer(config.data.vocab_path)
        objective = BertObjective(BertDataConfig.from_config(config), tokenizer)
    else:
        from bert_jax.objectives.t5_data import T5DataConfig, T5Objective

        tokenizer = Tokenizer(config.data.vocab_path, extra_ids=config.objective.extra_ids)
        objective = T5Objective(T5DataConfig.from_config(config), tokenizer)
    if start == "ids":
        _, documents = common.pretokenized_documents(config, tokenizer)
        return config, common.pipeline_from_documents(
            config, objective, documents, global_batch_size=32
        )
    if start == "shards":
        config = common.tokenized_config(config)
    return config, pipeline.create_dataset(
        config,
        objective,
        tokenizer,
        split="train",
        global_batch_size=32,
        process_index=0,
        process_count=1,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=("bert", "t5"), default="bert")
    parser.add_argument("--start", choices=("ids", "raw", "shards"), default="ids")
    parser.add_argument("--num_batches", type=int, default=128)
    args = parser.parse_args(argv)
    config, ds = build(args.family, args.start)
    iterator = iter(ds)
    for _ in range(max(1, config.data.shuffle_buffer // 32)):  # fill the first window
        next(iterator)
    profile = cProfile.Profile(time.process_time)  # CPU time: the machine may be shared
    profile.enable()
    for _ in range(args.num_batches):
        next(iterator)
    profile.disable()
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (..., cumulative, callers)
    total = max(value[3] for value in stats.values())
    print(
        f"{args.family} from {args.start}: {1000 * total / args.num_batches:.2f} ms CPU per "
        f"batch of 32 under cProfile ({args.num_batches} batches)"
    )
    for label, *where in STAGES:
        seconds = sum(v[3] for key, v in stats.items() if _is_stage(key, where))
        if seconds:
            share = 100 * seconds / total
            print(f"  {label:48s} {1000 * seconds / args.num_batches:7.3f} ms  {share:5.1f}%")


if __name__ == "__main__":
    main()
