"""T5 span-corruption throughput: our grain pipeline vs an HF-style per-example NumPy collator.

  python -m benchmarks.span_corruption                 # configs/t5.py: inputs 128, packing
  python -m benchmarks.span_corruption --repeats=5
  python -m benchmarks.span_corruption --smoke         # seconds; for the test suite

transformers has no span-corruption collator, so the peer is `HfStyleT5SpanCollator`
below: our own NumPy rewrite of the algorithm of `FlaxDataCollatorForT5MLM` in
huggingface/transformers examples/flax/language-modeling/run_t5_mlm_flax.py (a Python
loop of per-example `random_spans_noise_mask`, then batched sentinel ids and filtering),
with `np.bincount` where that file calls `jax.ops.segment_sum` (so the peer pays no JAX
dispatch) and the chunk array handed over directly (no list-of-dicts conversion).

  token ids  ours: the grain stages of `pipeline.create_dataset` after tokenization
             (documents -> T5Objective.examples_from_documents: random chunk, concatenate,
             split into 141-token chunks, span-corrupt -> packing -> window shuffle -> batch),
             fed the train documents pre-tokenized with our sentencepiece.
             peer: the same documents' tokens concatenated and cut into 141-token chunks
             (run_t5_mlm_flax.py's group_texts), then the collator on batches of 32.
  raw text   ours only: `pipeline.create_dataset` end to end (json.gz, sentencepiece, ...),
             for scale; the peer has no raw-text path here (its tokenizer would be the
             input_pipeline benchmark's).
  shards     ours: `pipeline.create_dataset` with config.data.source=tokenized (pre-tokenised
             ArrayRecord shards, `make tokenized`); compared with the token-ids peer.

Both produce 128 encoder tokens per chunk (141 - noise + one sentinel per span + EOS).
"Tokens" are source text tokens consumed: output tokens that are neither padding, EOS nor
a sentinel, counted the same way on both sides. Per core = per CPU second of this process.
"""

from __future__ import annotations

import numpy as np

from benchmarks import common


class HfStyleT5SpanCollator:
    """PEER (not ours): FlaxDataCollatorForT5MLM's algorithm, rewritten in NumPy.

    Sentinels count down from ``vocab_size`` (<extra_id_0> = vocab_size - 1), our layout.
    """

    def __init__(self, *, vocab_size, eos_id, noise_density, mean_noise_span_length, seed):
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.rng = np.random.default_rng(seed)

    def __call__(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        batch_size, expanded_length = chunks.shape
        # The per-example Python loop is the collator's: one mask per row.
        noise = np.asarray(
            [self.random_spans_noise_mask(expanded_length) for _ in range(batch_size)]
        )  # [batch, expanded_length]
        input_ids = self.filter_input_ids(chunks, self.create_sentinel_ids(noise.astype(np.int8)))
        labels = self.filter_input_ids(chunks, self.create_sentinel_ids((~noise).astype(np.int8)))
        decoder_input_ids = np.zeros_like(labels)
        decoder_input_ids[:, 1:] = labels[:, :-1]  # shift right; 0 starts decoding
        return {"input_ids": input_ids, "labels": labels, "decoder_input_ids": decoder_input_ids}

    def create_sentinel_ids(self, mask: np.ndarray) -> np.ndarray:
        """Span starts -> increasing sentinels, span continuations -> -1, elsewhere 0."""
        starts = mask - np.roll(mask, 1, axis=-1) * mask
        starts[:, 0] = mask[:, 0]
        span_number = np.where(starts != 0, np.cumsum(starts, axis=-1), 0)
        sentinels = np.where(span_number != 0, self.vocab_size - span_number, 0)
        return sentinels - (mask - starts)

    def filter_input_ids(self, input_ids: np.ndarray, sentinel_ids: np.ndarray) -> np.ndarray:
        """Sentinels replace span starts; continuations (-1) are dropped; EOS appended."""
        batch_size = input_ids.shape[0]
        full = np.where(sentinel_ids != 0, sentinel_ids, input_ids)
        kept = full[full > 0].reshape(batch_size, -1)
        eos = np.full((batch_size, 1), self.eos_id, dtype=kept.dtype)
        return np.concatenate([kept, eos], axis=-1)

    def random_spans_noise_mask(self, length: int) -> np.ndarray:
        """Alternating non-noise / noise spans with fixed counts, all layouts equally likely."""
        num_noise = min(max(int(np.round(length * self.noise_density)), 1), length - 1)
        num_spans = max(int(np.round(num_noise / self.mean_noise_span_length)), 1)
        noise_lengths = self._random_segmentation(num_noise, num_spans)
        nonnoise_lengths = self._random_segmentation(length - num_noise, num_spans)
        interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
        span_start = np.zeros(length, dtype=np.int8)
        span_start[np.cumsum(interleaved)[:-1]] = 1
        return np.cumsum(span_start) % 2 == 1

    def _random_segmentation(self, num_items: int, num_segments: int) -> np.ndarray:
        first_in_segment = np.arange(num_items - 1) < (num_segments - 1)
        self.rng.shuffle(first_in_segment)
        segment_id = np.cumsum(np.pad(first_in_segment, (1, 0)))
        return np.bincount(segment_id)  # the collator's jax.ops.segment_sum of ones


def text_tokens(token_arrays, eos_id: int, first_sentinel: int) -> float:
    """Source tokens in the outputs: not padding (0), not EOS, not a sentinel."""
    return float(sum(np.sum((t > eos_id) & (t < first_sentinel)) for t in token_arrays))


def peer_batches(chunks: np.ndarray, collator, batch_size: int):
    usable = len(chunks) // batch_size * batch_size
    start = 0
    while True:
        yield collator(chunks[start : start + batch_size])
        start = (start + batch_size) % usable


def main(argv=None) -> None:
    args = common.pipeline_parser(__doc__.split("\n")[0]).parse_args(argv)

    from bert_jax.data import pipeline
    from bert_jax.data.tokenizer import Tokenizer
    from bert_jax.objectives.t5_task import T5DataConfig, T5Objective

    config, max_documents, num_batches = common.pipeline_recipe("t5", args)
    tokenizer = Tokenizer(config.data.vocab_path, extra_ids=config.objective.extra_ids)
    data_config = T5DataConfig.from_config(config)
    objective = T5Objective(data_config, tokenizer)
    _, documents = common.pretokenized_documents(config, tokenizer, max_documents)
    first_sentinel = tokenizer.spm_vocab_size
    eos = tokenizer.eos_id

    stream = np.concatenate([np.concatenate(doc) for doc in documents])
    chunk = objective.tokens_length  # 141 raw tokens -> 128 encoder tokens
    chunks = stream[: len(stream) // chunk * chunk].reshape(-1, chunk)  # [chunks, 141]
    collator = HfStyleT5SpanCollator(
        vocab_size=tokenizer.vocab_size,
        eos_id=eos,
        noise_density=data_config.noise_density,
        mean_noise_span_length=data_config.mean_noise_span_length,
        seed=config.seed,
    )

    def count_ours(batch):
        outputs = (batch["encoder_input_tokens"], batch["decoder_target_tokens"])
        return batch["encoder_input_tokens"].shape[0], text_tokens(outputs, eos, first_sentinel)

    def count_peer(batch):
        if batch["input_ids"].shape[1] != config.data.max_seq_length:
            raise AssertionError(f"peer inputs have length {batch['input_ids'].shape[1]}")
        outputs = (batch["input_ids"], batch["labels"])
        return batch["input_ids"].shape[0], text_tokens(outputs, eos, first_sentinel)

    def count_examples(examples):
        outputs = [e[k] for e in examples for k in ("inputs", "targets")]
        return len(examples), text_tokens(outputs, eos, first_sentinel)

    def ours_dataset(from_text: bool = False, from_shards: bool = False):
        if from_text or from_shards:
            ds = pipeline.create_dataset(
                common.tokenized_config(config) if from_shards else config,
                objective,
                tokenizer,
                split="train",
                global_batch_size=args.batch_size,
                process_index=0,
                process_count=1,
            )
        else:
            ds = common.pipeline_from_documents(
                config, objective, documents, global_batch_size=args.batch_size
            )
        return common.drain(iter(ds), num_batches, count_ours, unit="rows")

    contenders = {
        "ours, token ids (grain tail, packed)": ours_dataset(from_text=False),
        "peer, token ids (HF-style NumPy collator)": common.drain(
            peer_batches(chunks, collator, args.batch_size), num_batches, count_peer, unit="rows"
        ),
        "ours, raw text (create_dataset, packed)": ours_dataset(from_text=True),
        "ours, tokenized shards (create_dataset, packed)": ours_dataset(from_shards=True),
        # Diagnostic, not in the ratio: the objective's NumPy alone (no grain, no packing).
        "(diagnostic) ours: objective only, unpacked": common.drain(
            common.objective_batches(
                objective,
                documents,
                docs_per_group=config.data.docs_per_group,
                batch_size=args.batch_size,
                seed=config.seed,
            ),
            num_batches,
            count_examples,
            unit="rows",
        ),
    }
    print(f"machine: {common.machine_info()}")
    print(
        f"config: configs/t5.py default ({data_config.name}, density "
        f"{data_config.noise_density}, mean span {data_config.mean_noise_span_length}); inputs "
        f"{objective.inputs_length}, targets {objective.targets_length}, chunks of {chunk} "
        f"tokens; batch {args.batch_size}; {num_batches} batches x {args.repeats} repeats "
        f"(median); {len(documents)} train documents; shuffle window "
        f"{config.data.shuffle_buffer} rows"
    )
    summaries = common.alternate(contenders, warmup=1, repeats=args.repeats)
    rows = [
        [
            name,
            s.rate("rows"),
            s.rate("tokens"),
            s.cores_busy,
            s.rate_per_core("tokens"),
            s.timings[-1].counts["tokens"] / s.timings[-1].counts["rows"],
        ]
        for name, s in summaries.items()
    ]
    common.print_table(
        ["contender", "rows/s", "tokens/s", "cores busy", "tokens/s/core", "tokens/row"], rows
    )
    ours, peer, ours_text, ours_shards, _ = summaries.values()
    print(
        f"raw text (ours) / token ids (peer), tokens/s per core: "
        f"{ours_text.rate_per_core('tokens') / peer.rate_per_core('tokens'):.2f}"
    )
    common.print_ratio(
        ours_shards.rate_per_core("tokens"),
        peer.rate_per_core("tokens"),
        "span corruption from tokenized shards, tokens/s per core",
    )
    common.print_ratio(
        ours.rate_per_core("tokens"),
        peer.rate_per_core("tokens"),
        "span corruption from token ids, tokens/s per core",
    )


if __name__ == "__main__":
    main()
