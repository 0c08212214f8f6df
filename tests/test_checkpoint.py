"""The checkpoint's model fingerprint: what must match for a restore, what may differ."""

from __future__ import annotations

import dataclasses

import grain
import jax.numpy as jnp
import pytest

from bert_jax.checkpointing.checkpointer import Checkpointer
from bert_jax.models.bert_config import BertConfig

CONFIG = BertConfig(vocab_size=16, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)


def _save_old_style(directory, drop: str) -> None:
    """A checkpoint written before the field ``drop`` existed (absent from its JSON)."""
    old = Checkpointer(directory, keep=1, model_config=CONFIG)
    del old.fingerprint[drop]
    iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
    old.save(1, {"x": jnp.zeros(2)}, iterator)
    old.close()


def test_a_field_added_later_matches_when_the_run_keeps_its_default(tmp_path):
    _save_old_style(tmp_path / "ckpt", drop="scan_layers")
    Checkpointer(tmp_path / "ckpt", keep=1, model_config=CONFIG).check_model(1)
    scanned = dataclasses.replace(CONFIG, scan_layers=True)
    with pytest.raises(ValueError, match="scan_layers: checkpoint=None config=True"):
        Checkpointer(tmp_path / "ckpt", keep=1, model_config=scanned).check_model(1)


def test_compute_only_fields_may_change_but_sizes_may_not(tmp_path):
    _save_old_style(tmp_path / "ckpt", drop="scan_layers")
    other_compute = dataclasses.replace(CONFIG, dtype="bfloat16", remat_policy="full")
    Checkpointer(tmp_path / "ckpt", keep=1, model_config=other_compute).check_model(1)
    wider = dataclasses.replace(CONFIG, hidden_size=16)
    with pytest.raises(ValueError, match="hidden_size: checkpoint=8 config=16"):
        Checkpointer(tmp_path / "ckpt", keep=1, model_config=wider).check_model(1)
