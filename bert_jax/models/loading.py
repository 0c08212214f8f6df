"""Where a model's weights come from: random, our pretraining workdir, or Hugging Face.

``load_model(init, path, ...)`` is the one start every command that needs a model
(fine-tuning an encoder, text-to-text T5, probes) goes through:

- ``random``: a fresh model of the run config (``registry.model_config``); the caller
  initialises it as the train loop does.
- ``pretrained``: the latest checkpoint of the workdir ``path``. The model config is
  the one it records (so size overrides used for pretraining need not be repeated);
  only the parameters are read (``checkpointing.inference``: no optimizer, no recipe),
  when ``load_params()`` is called. Its vocabulary is the one the checkpoint records.
- ``hf``: the Hugging Face directory ``path`` (``export.hf.load_hf``); its own
  ``config.json`` gives the architecture.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import ml_collections
from flax import nnx

from bert_jax.checkpointing import inference, workdir
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.models import registry

INITS = ("pretrained", "hf", "random")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model config and how to get its weights.

    Attributes:
      model_config: the BertConfig / T5Config of the weights.
      load_params: ``() -> params`` in the layout of ``registry.model_spec(model_config)``;
        None for ``random`` (the fresh initialisation is the start).
      tokenizer: the vocabulary the source records (a pretrained workdir whose checkpoint
        records its run config); None: the caller's run config names it.
    """

    model_config: Any
    load_params: Callable[[], nnx.State] | None
    tokenizer: Tokenizer | None = None


def recorded_tokenizer(run_config: ml_collections.ConfigDict | None) -> Tokenizer | None:
    """The vocabulary of a recorded run config; None if unrecorded or its file is gone."""
    if run_config is None:
        return None
    path = run_config.data.vocab_path
    if not os.path.exists(path):
        logging.warning("the vocabulary %s the checkpoint records is gone", path)
        return None
    return registry.tokenizer(run_config)


def load_model(
    init: str,
    path: str | None = None,
    *,
    run_config: ml_collections.ConfigDict | None = None,
    vocab_size: int | None = None,
    mesh_config: ml_collections.ConfigDict | None = None,
    expect: tuple[type, str] | None = None,
    kinds: tuple[str, ...] = tuple(registry.FAMILIES),
) -> LoadedModel:
    """The model ``init`` names (see the module docstring).

    Args:
      init: 'random', 'pretrained' or 'hf'.
      path: the pretraining workdir ('pretrained') or Hugging Face directory ('hf').
      run_config: 'random': the run config whose model is built.
      vocab_size: 'random': the vocabulary size of that model.
      mesh_config: 'pretrained': the mesh the parameters are restored onto.
      expect: 'pretrained': (config class, what the caller needs) to refuse another family.
      kinds: 'hf': the model types accepted.

    Raises:
      ValueError: an unknown ``init``, or a model of another family.
      FileNotFoundError: no checkpoint at ``path``, or no config.json there ('hf').
    """
    if init == "random":
        return LoadedModel(registry.model_config(run_config, vocab_size), None)
    if init == "pretrained":
        saved = workdir.saved_model_config(path, expect)

        def load_params() -> nnx.State:
            with inference.restore_for_inference(path, mesh_config, model_config=saved) as restored:
                logging.info("starting from %s step %d", path, restored.step)
                return restored.params

        return LoadedModel(saved, load_params, recorded_tokenizer(workdir.saved_run_config(path)))
    if init == "hf":
        from bert_jax.export import hf  # the weight mapping, only when a directory is read

        hf_config, params = hf.load_hf(path, kinds=kinds)
        return LoadedModel(hf_config, lambda: params)
    raise ValueError(f"init={init!r}; choose one of {INITS}")
