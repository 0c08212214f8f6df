"""The recipe files: recipe tables applied by one helper, variants, errors naming the file."""

from __future__ import annotations

import itertools

import pytest

from bert_jax.runtime import run_config
from bert_jax.runtime.run_config import load_recipe

VARIANTS = {
    "bert": {
        "size": ("tiny", "mini", "small", "base", "large"),
        "recipe": ("cpu", "short", "long", "paper"),
    },
    "albert": {"size": ("tiny", "base", "large", "xlarge"), "recipe": ("cpu", "paper")},
    "t5": {
        "size": ("tiny", "small", "base", "large"),
        "variant": ("v1_0", "v1_1"),
        "recipe": ("cpu", "paper"),
    },
}


def recipe_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"recipe_{name}", run_config.REPO_ROOT + f"/configs/{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flat(config) -> dict:
    out = {}
    for section, value in config.items():
        if hasattr(value, "items"):
            out.update({f"{section}.{k}": v for k, v in flat(value).items()})
        else:
            out[section] = value
    return out


def combinations(name: str):
    keys = list(VARIANTS[name])
    for values in itertools.product(*VARIANTS[name].values()):
        yield ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_is_the_base_recipe_plus_its_table(name):
    recipes = recipe_module(name).RECIPES
    assert sorted(recipes) == sorted(VARIANTS[name]["recipe"])
    for arg in combinations(name):
        config = flat(load_recipe(f"configs/{name}.py:{arg}"))
        recipe = dict(item.split("=") for item in arg.split(","))["recipe"]
        for dotted, value in recipes[recipe].items():
            assert config[dotted] == value, (arg, dotted)
        # Another recipe of the same file differs only where one of the two tables says.
        for other in recipes:
            other_config = flat(load_recipe(f"configs/{name}.py:" + arg.replace(recipe, other)))
            differing = {k for k in config if config[k] != other_config[k]}
            assert differing <= set(recipes[recipe]) | set(recipes[other]), (arg, other)
        assert "train.profile" not in config  # never read: removed
        local = flat(load_recipe(f"configs/{name}.py:{arg},runlocal"))
        assert (local["train.num_steps"], local["train.batch_size"]) == (4, 8)


def test_recipe_values_the_readme_quotes():
    bert = load_recipe("configs/bert.py")
    assert (bert.train.batch_size, bert.train.num_steps, bert.optim.learning_rate) == (
        32,
        2400,
        1e-3,
    )
    assert bert.model.dropout_rate == 0.0 and bert.objective.sop_both_orders is False
    # The default trains masked LM only at 30% and evaluates at BERT's 15%.
    assert bert.objective.sentence_pair_task == "none"
    assert (bert.objective.masked_lm_prob, bert.objective.eval_masked_lm_prob) == (0.3, 0.15)
    short = load_recipe("configs/bert.py:recipe=short")
    assert (short.train.num_steps, short.objective.sentence_pair_task) == (2500, "nsp")
    assert short.objective.masked_lm_prob == 0.15
    paper = load_recipe("configs/bert.py:size=base,recipe=paper")
    assert (paper.train.batch_size, paper.train.num_steps, paper.model.dropout_rate) == (
        256,
        1_000_000,
        0.1,
    )
    albert = load_recipe("configs/albert.py")
    assert (albert.data.max_seq_length, albert.optim.learning_rate) == (64, 5e-3)
    t5 = load_recipe("configs/t5.py:recipe=paper")
    assert (t5.data.max_seq_length, t5.train.num_steps, t5.objective.z_loss) == (512, 524_288, 1e-4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_unknown_recipe_names_the_file_and_the_choices(name):
    with pytest.raises(ValueError, match=rf"configs/{name}.py: unknown recipe='fast' \(cpu"):
        load_recipe(f"configs/{name}.py:recipe=fast")


def test_apply_recipe_rejects_a_field_the_config_lacks():
    config = run_config.base_config()
    with pytest.raises(ValueError, match="configs/x.py: recipe 'cpu' sets unknown field"):
        run_config.apply_recipe(config, {"cpu": {"train.num_stpes": 3}}, "cpu", "configs/x.py")


def test_finetune_runlocal_shrinks_like_the_pretraining_recipes_but_scores_the_dev_set():
    config = load_recipe("configs/finetune.py:runlocal")
    assert (config.train.batch_size, config.train.num_steps, config.train.log_every) == (8, 4, 1)
    assert config.train.eval_batches == 1_000_000  # capped by max_eval_examples instead
    assert (config.train.checkpoint_every, config.finetune.max_eval_examples) == (4, 256)
    with pytest.raises(ValueError, match="configs/finetune.py: unknown init='warm'"):
        load_recipe("configs/finetune.py:init=warm")
