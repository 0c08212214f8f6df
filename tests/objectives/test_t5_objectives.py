"""T5Objective: every preset of the paper's comparison, end to end on synthetic documents."""

import pickle
from pathlib import Path

import grain
import numpy as np
import pytest
from conftest import load_recipe

from bert_jax.objectives import t5_task

SPM_MODEL = Path(__file__).resolve().parents[2] / "data" / "vocab" / "spm.model"


class SyntheticTokenizer:
    """The Tokenizer interface over plain ids: 1000 pieces (specials 0-5) + 100 sentinels."""

    pad_id, eos_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4, 5
    first_normal_id = 6
    extra_ids = 100
    vocab_size = 1100

    def sentinel_id(self, i: int) -> int:
        return self.vocab_size - 1 - i


TOKENIZER = SyntheticTokenizer()
SENTINEL_0 = TOKENIZER.vocab_size - 1


def make_documents(seed: int, num_documents: int = 16) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        [rng.integers(6, 1000, rng.integers(1, 40)).astype(np.int32) for _ in range(num_sentences)]
        for num_sentences in rng.integers(0, 40, num_documents)
    ]


def make_objective(name: str, inputs_length: int = 128, **overrides) -> t5_task.T5Objective:
    return t5_task.T5Objective(
        t5_task.T5DataConfig.preset(name, inputs_length, **overrides), TOKENIZER
    )


def chunks_of(objective, documents) -> list[np.ndarray]:
    """The raw chunks the objective corrupts (documents are short: no random 64k chunk)."""
    texts = [np.concatenate(d) for d in documents if d]
    if objective.config.concat_documents:
        texts = [np.concatenate(texts)]
    size = objective.tokens_length
    chunks = [text[i : i + size] for text in texts for i in range(0, len(text), size)]
    return [c for c in chunks if len(c) >= 2]


def merge_sentinels(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    spans, current = {}, None
    for token in targets.tolist():
        if token >= 1000:
            current = spans.setdefault(token, [])
        elif current is not None:
            current.append(token)
    merged = []
    for token in inputs.tolist():
        merged.extend(spans.get(token, []) if token >= 1000 else [token])
    return np.array(merged, np.int32)


def examples_and_chunks(name, seed=0, **overrides):
    objective = make_objective(name, **overrides)
    documents = make_documents(seed)
    examples = objective.examples_from_documents(documents, np.random.default_rng(seed))
    chunks = chunks_of(objective, documents)
    assert len(examples) == len(chunks)
    for example in examples:
        assert example["inputs"].dtype == example["targets"].dtype == np.int32
        assert example["inputs"][-1] == example["targets"][-1] == TOKENIZER.eos_id
        assert len(example["inputs"]) <= objective.inputs_length
        assert len(example["targets"]) <= objective.targets_length
    return objective, examples, chunks


def test_presets_and_aliases_resolve():
    for name in [*t5_task.PRESETS, *t5_task.ALIASES]:
        config = t5_task.T5DataConfig.preset(name, 512)
        assert config.name == t5_task.ALIASES.get(name, name)
    with pytest.raises(ValueError, match="not a T5 objective"):
        t5_task.T5DataConfig.preset("span_corruptoin", 512)
    with pytest.raises(ValueError, match="inputs_fn"):
        t5_task.T5DataConfig.preset("span_corruption", 512, inputs_fn="mask_everything")


def test_from_config_reads_name_length_and_overrides():
    config = load_recipe("t5")  # every objective field, None (keep the preset) unless set
    config.data.max_seq_length = 256
    config.objective.update(
        {"name": "span_corruption", "noise_density": None, "mean_noise_span_length": 10.0}
    )
    data_config = t5_task.T5DataConfig.from_config(config)
    assert data_config.inputs_length == 256
    assert data_config.noise_density == 0.15  # None keeps the preset
    assert data_config.mean_noise_span_length == 10.0
    config.objective.mean_noise_span_length = 0.0  # 0 switches span noise to i.i.d.
    assert t5_task.T5DataConfig.from_config(config).noise_mask == "iid"


def test_span_corruption_lengths_and_reconstruction():
    objective, examples, chunks = examples_and_chunks("span_corruption", inputs_length=512)
    assert (objective.tokens_length, objective.targets_length) == (568, 114)
    for example, chunk in zip(examples, chunks, strict=True):
        if len(chunk) == objective.tokens_length:  # full chunks fill both lengths exactly
            assert len(example["inputs"]) == 512 and len(example["targets"]) == 114
        inputs, targets = example["inputs"][:-1], example["targets"][:-1]
        sentinels = inputs[inputs >= 1000].tolist()
        assert sentinels == list(range(SENTINEL_0, SENTINEL_0 - len(sentinels), -1))
        assert np.array_equal(merge_sentinels(inputs, targets), chunk)


@pytest.mark.parametrize(
    "density, mean_span, tolerance",
    # At 512, T5's rounding of the span count gives 87 / 17 = 5.12 for mean span 5.
    [(0.15, 3.0, 0.02), (0.15, 2.0, 0.02), (0.15, 10.0, 0.02), (0.5, 3.0, 0.02), (0.15, 5.0, 0.03)],
)
def test_measured_density_and_span_length(density, mean_span, tolerance):
    objective = make_objective(
        "span_corruption", 512, noise_density=density, mean_noise_span_length=mean_span
    )
    noise = spans = tokens = 0
    for seed in range(8):
        documents = make_documents(seed)
        for example in objective.examples_from_documents(documents, np.random.default_rng(seed)):
            targets = example["targets"][:-1]
            noise += int(np.sum(targets < 1000))
            spans += int(np.sum(example["inputs"] >= 1000))
            tokens += int(np.sum(targets < 1000) + np.sum(example["inputs"][:-1] < 1000))
    assert noise / tokens == pytest.approx(density, rel=tolerance)
    assert noise / spans == pytest.approx(mean_span, rel=tolerance)


def test_iid_replace_spans_reconstructs():
    objective, examples, chunks = examples_and_chunks("iid_replace_spans")
    assert objective.tokens_length == 127
    for example, chunk in zip(examples, chunks, strict=True):
        merged = merge_sentinels(example["inputs"][:-1], example["targets"][:-1])
        assert np.array_equal(merged, chunk)


def test_bert_style_targets_original_and_mixes_sentinel_and_random():
    _, examples, chunks = examples_and_chunks("bert_style", seed=1)
    sentinel = changed = total = 0
    for example, chunk in zip(examples, chunks, strict=True):
        assert np.array_equal(example["targets"][:-1], chunk)
        inputs = example["inputs"][:-1]
        sentinel += int(np.sum(inputs == SENTINEL_0))
        changed += int(np.sum(inputs != chunk))
        total += len(chunk)
    # 15% corrupted: 90% of them become the sentinel, 10% a random (rarely identical) piece.
    assert changed / total == pytest.approx(0.15 * (1 - 0.1 / 994), rel=0.1)
    assert sentinel / changed == pytest.approx(0.9, abs=0.03)


def test_mass_style_masks_tokens_and_targets_original():
    _, examples, chunks = examples_and_chunks("mass_style")
    for example, chunk in zip(examples, chunks, strict=True):
        inputs = example["inputs"][:-1]
        assert np.array_equal(example["targets"][:-1], chunk)
        assert np.array_equal(inputs[inputs != SENTINEL_0], chunk[inputs != SENTINEL_0])


def test_drop_tokens_inputs_lose_what_targets_hold():
    _, examples, chunks = examples_and_chunks("drop_tokens")
    for example, chunk in zip(examples, chunks, strict=True):
        inputs, targets = example["inputs"][:-1], example["targets"][:-1]
        assert len(inputs) + len(targets) == len(chunk)
        assert sorted([*inputs, *targets]) == sorted(chunk)
        assert not np.any(inputs >= 1000) and not np.any(targets >= 1000)


def test_prefix_lm_splits_each_document():
    objective, examples, chunks = examples_and_chunks("prefix_lm")
    assert not objective.config.concat_documents
    for example, chunk in zip(examples, chunks, strict=True):
        inputs, targets = example["inputs"][:-1], example["targets"][:-1]
        assert len(inputs) >= 1 and len(targets) >= 1
        assert np.array_equal(np.concatenate([inputs, targets]), chunk)


def test_deshuffling_permutes_inputs_and_targets_original():
    _, examples, chunks = examples_and_chunks("deshuffling")
    for example, chunk in zip(examples, chunks, strict=True):
        assert np.array_equal(example["targets"][:-1], chunk)
        assert sorted(example["inputs"][:-1]) == sorted(chunk)
    assert not all(
        np.array_equal(e["inputs"][:-1], c) for e, c in zip(examples, chunks, strict=True)
    )


@pytest.mark.parametrize("name", sorted(t5_task.PRESETS))
def test_every_preset_fits_and_is_deterministic(name):
    objective = make_objective(name)
    documents = make_documents(3)
    first = objective.examples_from_documents(documents, np.random.default_rng(7))
    again = objective.examples_from_documents(documents, np.random.default_rng(7))
    other = objective.examples_from_documents(documents, np.random.default_rng(8))
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a["inputs"], b["inputs"]) and np.array_equal(
            a["targets"], b["targets"]
        )
    assert any(
        not np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, other, strict=True)
    )


@pytest.mark.parametrize("name", sorted(t5_task.PRESETS))
def test_group_at_once_equals_chunk_by_chunk_denoising(name):
    # The full chunks of a group are denoised as 2-D arrays where the functions draw no
    # random numbers; every example must be the one `denoise` gives chunk by chunk.
    for inputs_length in (64, 512):
        objective = make_objective(name, inputs_length)
        documents = make_documents(5, 24)
        got = objective.examples_from_documents(documents, np.random.default_rng(9))
        rng = np.random.default_rng(9)
        want = [objective.denoise(chunk, rng) for chunk in chunks_of(objective, documents)]
        assert len(got) == len(want) > 1
        for a, b in zip(got, want, strict=True):
            assert a["inputs"].dtype == b["inputs"].dtype == np.int32
            np.testing.assert_array_equal(a["inputs"], b["inputs"])
            np.testing.assert_array_equal(a["targets"], b["targets"])


def test_iid_targets_that_overflow_are_cut_to_fit():
    objective = make_objective("iid_replace_spans", targets_length=16)
    examples = objective.examples_from_documents(make_documents(4), np.random.default_rng(0))
    assert max(len(e["targets"]) for e in examples) <= 16
    assert max(len(e["inputs"]) for e in examples) <= objective.inputs_length


def test_long_documents_keep_one_random_aligned_chunk():
    # T5's select_random_chunk: one of the 65536-token chunks of a document, uniformly.
    objective = make_objective("prefix_lm")
    document = [np.arange(70_000, dtype=np.int32) % 994 + 6]
    chosen = set()
    for seed in range(8):
        examples = objective.examples_from_documents([document], np.random.default_rng(seed))
        kept = np.concatenate(
            [np.concatenate([e["inputs"][:-1], e["targets"][:-1]]) for e in examples]
        )
        starts = [
            start for start in (0, 65536) if np.array_equal(kept, document[0][start:][:65536])
        ]
        assert len(starts) == 1
        chosen.add(starts[0])
    assert chosen == {0, 65536}


def test_objective_pickles_for_grain_workers():
    objective = make_objective("bert_style")
    clone = pickle.loads(pickle.dumps(objective))
    documents = make_documents(6)
    first = objective.examples_from_documents(documents, np.random.default_rng(0))
    second = clone.examples_from_documents(documents, np.random.default_rng(0))
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("pack", [True, False])
def test_finalize_gives_fixed_shape_t5x_features(pack):
    objective = make_objective("span_corruption", pack=pack)
    examples = objective.examples_from_documents(make_documents(5), np.random.default_rng(0))
    rows = list(objective.finalize(grain.MapDataset.source(examples).to_iter_dataset()))
    lengths = {"encoder": objective.inputs_length, "decoder": objective.targets_length}
    for row in rows:
        assert row["encoder_input_tokens"].shape == (lengths["encoder"],)
        assert row["decoder_target_tokens"].shape == (lengths["decoder"],)
        assert row["decoder_input_tokens"][0] == 0
        assert row["decoder_loss_weights"].dtype == np.float32
        assert ("encoder_segment_ids" in row) == pack
    real_targets = sum(int(row["decoder_loss_weights"].sum()) for row in rows)
    assert real_targets == sum(len(e["targets"]) for e in examples)


@pytest.mark.skipif(not SPM_MODEL.exists(), reason="data/vocab/spm.model not built yet")
def test_span_corruption_with_the_real_tokenizer():
    from bert_jax.data.tokenizer import Tokenizer

    tokenizer = Tokenizer(str(SPM_MODEL), extra_ids=100)
    objective = t5_task.T5Objective(t5_task.T5DataConfig.preset("span_corruption", 128), tokenizer)
    text = "The quick brown fox jumps over the lazy dog. " * 40
    documents = [tokenizer.encode_document(text)]
    examples = objective.examples_from_documents(documents, np.random.default_rng(0))
    original = np.concatenate(documents[0])
    lowest_sentinel = tokenizer.sentinel_id(99)
    rebuilt = []
    for example in examples:
        inputs, targets = example["inputs"][:-1], example["targets"][:-1]
        assert inputs[inputs >= lowest_sentinel].max() == tokenizer.sentinel_id(0)
        spans, current = {}, None
        for token in targets.tolist():
            if token >= lowest_sentinel:
                current = spans.setdefault(token, [])
            else:
                current.append(token)
        for token in inputs.tolist():
            rebuilt.extend(spans[token] if token >= lowest_sentinel else [token])
    assert np.array_equal(rebuilt, original)
    assert tokenizer.decode(np.array(rebuilt)) == tokenizer.decode(original)
