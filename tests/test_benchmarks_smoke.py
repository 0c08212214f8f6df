"""The benchmark scripts run end to end on tiny sizes and print their ratio line.

No timing is asserted (STYLE.md: a benchmark prints a ratio, tests never check
wall-clock); these only keep the scripts and their peers working.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.input_pipeline import hf_tokenizer
from benchmarks.span_corruption import HfStyleT5SpanCollator

RATIO_LINE = re.compile(r"^ratio \(ours / peer\): \d+\.\d\d  \[.+\]$", re.MULTILINE)


@pytest.mark.parametrize(
    "module, args",
    [
        ("benchmarks.input_pipeline", []),
        ("benchmarks.span_corruption", []),
        ("benchmarks.train_step", ["--model=bert"]),
        ("benchmarks.train_step", ["--model=t5"]),
    ],
)
def test_smoke_run_prints_ratio(repo_root, vocab_path, corpus_dir, module, args):
    # CPU for JAX so the PyTorch (CPU) peer always runs beside it and a ratio is printed.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke", *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert RATIO_LINE.search(result.stdout), result.stdout


def test_peer_span_collator_round_trips():
    """The span-corruption peer is a real span corruption: inputs + labels give the chunk back."""
    vocab_size, eos_id = 8100, 1
    collator = HfStyleT5SpanCollator(
        vocab_size=vocab_size, eos_id=eos_id, noise_density=0.15, mean_noise_span_length=3.0, seed=0
    )
    chunks = np.random.default_rng(1).integers(6, 8000, (4, 141))  # [batch, 141]
    out = collator(chunks)
    assert out["input_ids"].shape == (4, 128)  # 141 - 21 noise + 7 sentinels + EOS
    assert out["labels"].shape == (4, 29)  # 21 noise + 7 sentinels + EOS
    for inputs, labels, chunk in zip(out["input_ids"], out["labels"], chunks, strict=True):
        spans, current = {}, None
        for token in labels[:-1]:
            if token >= 8000:
                current = spans.setdefault(int(token), [])
            else:
                current.append(int(token))
        rebuilt = [t for token in inputs[:-1] for t in spans.get(int(token), [int(token)])]
        assert rebuilt == chunk.tolist()
        assert inputs[-1] == labels[-1] == eos_id
        assert int(inputs[inputs >= 8000][0]) == vocab_size - 1  # <extra_id_0> first


def test_peer_tokenizer_matches_sentencepiece(vocab_path):
    """The HF collator's tokenizer has our pieces and ids, wrapped in [CLS] .. [SEP]."""
    from bert_jax.data.tokenizer import Tokenizer

    ours = Tokenizer(vocab_path)
    theirs = hf_tokenizer(vocab_path)
    text = "The quick brown fox jumps over the lazy dog. It was 1999!"
    assert theirs(text)["input_ids"] == [ours.cls_id, *ours.encode(text).tolist(), ours.sep_id]
    assert theirs.mask_token_id == ours.mask_id
    assert theirs.pad_token_id == ours.pad_id
