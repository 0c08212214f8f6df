"""Trains the shared sentencepiece unigram vocabulary on C4-format `json.gz` shards.

    python -m data_prep.train_tokenizer \
        --corpus_glob 'data/c4_sample/c4-train.*.json.gz' --out_prefix data/vocab/spm

Writes `{out_prefix}.model` and `{out_prefix}.vocab` atomically, with the id layout that
bert_jax.data.tokenizer.Tokenizer checks: [PAD]=0, </s>=1, [UNK]=2, [CLS]=3, [SEP]=4, [MASK]=5.
"""

import argparse
import glob
import gzip
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import sentencepiece as spm

from bert_jax.data import tokenizer


def read_texts(corpus_glob: str, text_field: str = "text") -> Iterator[str]:
    """The `text_field` of every JSON line of every shard matching the glob, in sorted order."""
    paths = sorted(glob.glob(corpus_glob))
    if not paths:
        raise FileNotFoundError(f"No shards match {corpus_glob!r}; run `make corpus` first.")
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as shard:
            for line_number, line in enumerate(shard, start=1):
                try:
                    yield json.loads(line)[text_field]
                except (json.JSONDecodeError, KeyError) as error:
                    raise ValueError(f"{path}:{line_number}: bad C4 record ({error})") from error


def sample_sentences(texts: Iterator[str], max_chars: int) -> list[str]:
    """Sentences of the first documents, up to `max_chars` characters in total.

    The shards are already shuffled, so a prefix is a fair sample of every source.
    """
    sentences, total_chars = [], 0
    for text in texts:
        for sentence in tokenizer.split_sentences(text):
            sentences.append(sentence)
            total_chars += len(sentence)
        if total_chars >= max_chars:
            break
    return sentences


def train_model(sentences: list[str], vocab_size: int, num_threads: int) -> bytes:
    """A serialized unigram model with the shared special-id layout."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus may not support the full size
        pad_id=tokenizer.EXPECTED_SPECIAL_IDS[tokenizer.PAD_PIECE],
        pad_piece=tokenizer.PAD_PIECE,
        eos_id=tokenizer.EXPECTED_SPECIAL_IDS[tokenizer.EOS_PIECE],
        eos_piece=tokenizer.EOS_PIECE,
        unk_id=tokenizer.EXPECTED_SPECIAL_IDS[tokenizer.UNK_PIECE],
        unk_piece=tokenizer.UNK_PIECE,
        bos_id=-1,
        user_defined_symbols=[tokenizer.CLS_PIECE, tokenizer.SEP_PIECE, tokenizer.MASK_PIECE],
        byte_fallback=True,  # no [UNK] in practice: unseen characters become byte pieces
        split_digits=True,
        normalization_rule_name="nmt_nfkc",
        character_coverage=0.9995,
        max_sentence_length=16384,
        num_threads=num_threads,
        minloglevel=2,
    )
    return model.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.tmp")
    tmp_path.write_bytes(data)
    os.replace(tmp_path, path)


def vocab_file_text(model_proto: bytes) -> str:
    """The `.vocab` companion file sentencepiece writes itself: `piece<TAB>score` per id."""
    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    return "".join(
        f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
        for i in range(processor.get_piece_size())
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus_glob", required=True)
    parser.add_argument("--out_prefix", required=True)
    parser.add_argument("--vocab_size", default=8000, type=int)
    parser.add_argument("--max_chars", default=5_000_000, type=int, help="training sample cap")
    # The trained model depends on the thread count: a fixed default keeps it machine-independent.
    parser.add_argument("--num_threads", default=2, type=int)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    sentences = sample_sentences(read_texts(args.corpus_glob), args.max_chars)
    chars = sum(map(len, sentences))
    print(f"Training on {len(sentences)} sentences, {chars / 1e6:.2f} M chars")
    model_proto = train_model(sentences, args.vocab_size, args.num_threads)
    model_path = Path(f"{args.out_prefix}.model")
    write_atomically(Path(f"{args.out_prefix}.vocab"), vocab_file_text(model_proto).encode())
    write_atomically(model_path, model_proto)  # last: make's target appears only when complete
    vocab = tokenizer.Tokenizer(str(model_path))  # checks the special-id layout
    elapsed = time.perf_counter() - start
    print(f"Wrote {model_path}: vocab size {vocab.vocab_size} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
