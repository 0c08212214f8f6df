"""models/registry.py: one table from family name to config, model and Hugging Face names."""

from __future__ import annotations

import pytest
from conftest import load_recipe
from flax import nnx

from bert_jax.checkpointing.fingerprint import model_fingerprint
from bert_jax.models import bert, registry, t5


@pytest.mark.parametrize(
    "name, config_class, model_class, architecture",
    [
        ("bert", bert.BertConfig, bert.BertForPreTraining, "BertForPreTraining"),
        ("albert", bert.BertConfig, bert.BertForPreTraining, "AlbertForPreTraining"),
        ("t5", t5.T5Config, t5.T5ForConditionalGeneration, "T5ForConditionalGeneration"),
    ],
)
def test_each_family_builds_its_model_from_the_run_config_and_the_record(
    name, config_class, model_class, architecture, vocab_path
):
    config = load_recipe(name)
    family = registry.family(name)
    assert (family.config_class, family.model_class) == (config_class, model_class)
    assert (family.hf_model_type, family.hf_architecture) == (name, architecture)
    tokenizer = registry.tokenizer(config)
    model_config = registry.model_config(config, tokenizer.vocab_size)
    assert type(model_config) is config_class and model_config.vocab_size == tokenizer.vocab_size
    if name == "t5":  # the sentinels follow the sentencepiece ids
        assert tokenizer.vocab_size == tokenizer.spm_vocab_size + config.objective.extra_ids
    else:
        assert model_config.max_position_embeddings == 512
        assert (model_config.share_mode == "all") == (name == "albert")
    # A checkpoint's `model` record gives the same config back.
    record = model_fingerprint(model_config)
    assert registry.config_from_record(record, "ckpt") == model_config
    spec = registry.model_spec(model_config)
    model = nnx.eval_shape(lambda: spec.create_model(nnx.Rngs(params=0)))
    assert type(model) is model_class
    graphdef, params = registry.abstract_params(spec.create_model)
    assert graphdef == nnx.split(model, nnx.Param)[0]


def test_unknown_names_are_refused_naming_the_known_ones(vocab_path):
    config = load_recipe("bert")
    config.model.name = "gpt"
    with pytest.raises(ValueError, match=r"config.model.name='gpt'; choose one of \('bert', "):
        registry.model_config(config, 100)
    with pytest.raises(ValueError, match="ckpt holds a GptConfig model; know"):
        registry.config_from_record({"class": "GptConfig"}, "ckpt")
    with pytest.raises(ValueError, match="config.model: unknown bert size 'huge'"):
        config.model.name, config.model.size = "bert", "huge"
        registry.model_config(config, 100)
