"""``bert-jax export`` and its inverse: whole Hugging Face directories <-> our checkpoints.

`export_checkpoint` restores the latest checkpoint of a workdir and writes a
directory that ``transformers`` loads offline with its Auto classes; the model
family, vocabulary and mesh come from the run config the checkpoint records (as
``save_pretrained`` writes a model's own config), or from ``--config`` when given:

  bert   -> BertForPreTraining          (AutoModelForPreTraining)
  albert -> AlbertForPreTraining        (AutoModelForPreTraining)
  t5     -> T5ForConditionalGeneration  (AutoModelForSeq2SeqLM)

plus ``config.json``, ``model.safetensors`` and the tokenizer: our sentencepiece
model as ``spiece.model`` and a ``tokenizer.json`` (with ``tokenizer_config.json``)
for ``AutoTokenizer``. The tokenizer class is transformers' generic
``TokenizersBackend``, not ``AlbertTokenizer`` / ``T5Tokenizer`` / ``BertTokenizer``:
BertTokenizer is WordPiece-only, and in transformers 5 the ALBERT and T5 classes
rebuild their pipeline without sentencepiece's byte fallback (ALBERT also fixes
unk_id=1, our </s>), so every character outside the vocabulary would get a wrong
id. The tokenizer.json built from the sentencepiece proto encodes like
``SentencePieceProcessor.encode``, then adds the model's special tokens:
``[CLS] ... [SEP]`` (ids 3, 4) for BERT/ALBERT, ``... </s>`` (id 1) for T5, whose
``<extra_id_i>`` sentinels are ids ``vocab_size - 1 - i`` as in our Tokenizer.
Known differences from our Tokenizer: a literal ``[MASK]`` in the text loses the
``▁`` sentencepiece puts before it, and rare exact score ties between two
segmentations may break the other way.

`import_hf` reads a Hugging Face BERT, ALBERT or T5 directory (e.g. a released
Google checkpoint) into our parameters, after checking it fits the run config.
One concept, a Hugging Face directory both ways (with its tokenizer), so over 300 lines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

import jax
import ml_collections
from flax import nnx

from bert_jax.checkpointing.inference import older_checkpoint_message, restore_for_inference
from bert_jax.checkpointing.workdir import check_exists, saved_run_config
from bert_jax.data.tokenizer import Tokenizer
from bert_jax.export import bert_weights, convert, t5_weights
from bert_jax.models import layer_stack, registry
from bert_jax.models.bert import BertConfig
from bert_jax.models.t5_config import T5Config

KINDS = tuple(registry.FAMILIES)  # bert, albert, t5
# Hyperparameters that do not change what a checkpoint computes at inference, and
# the parameter layout (an import is stacked to the config's `scan_layers`).
_TRAINING_ONLY_FIELDS = {
    "dropout_rate",
    "attention_dropout_rate",
    "param_dtype",
    "initializer_range",
    "scan_layers",
    *layer_stack.COMPUTE_ONLY_FIELDS,
}


def export_checkpoint(config: ml_collections.ConfigDict | None, workdir: str, out_dir: str) -> str:
    """Writes the latest checkpoint of ``workdir`` as a Hugging Face directory.

    Args:
      config: the run config the checkpoint was trained with (configs/*.py); None takes
        the one the checkpoint records (older checkpoints need it given).
      workdir: the pretraining workdir (its checkpoints are read).
      out_dir: must not exist, or be an empty directory: the export is written beside it
        and renamed into place when whole (`convert.new_directory`), so an interrupted
        or failed export leaves nothing there.

    Returns:
      ``out_dir``.

    Raises:
      FileNotFoundError: ``workdir`` has no checkpoint.
      ValueError: the checkpoint holds another model than ``config``'s (see Checkpointer),
        ``out_dir`` holds files, or no config is given for a checkpoint that records none.
    """
    if config is not None:
        _kind(config.model.name, "config.model.name")
    convert.check_new_directory(out_dir)  # before minutes of restoring
    check_exists(workdir)  # before the vocabulary is read
    run = config if config is not None else saved_run_config(workdir)
    if run is None:
        raise ValueError(older_checkpoint_message(workdir))
    kind = _kind(run.model.name, "config.model.name")
    tokenizer = registry.tokenizer(run)  # the model's vocabulary, written beside it
    # With a config, its model must be the checkpoint's (every weight-changing field).
    model_config = None if config is None else registry.model_config(config, tokenizer.vocab_size)
    with restore_for_inference(workdir, run.mesh, model_config=model_config) as restored:
        params, step, model_config = restored.params, restored.step, restored.model_config
    if jax.process_count() > 1:  # parameters may be sharded over hosts: gather them
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
        export_params(params, model_config, kind, tokenizer, out_dir)
        logging.info("exported %s step %d of %s to %s", kind, step, workdir, out_dir)
    return out_dir


def export_params(
    params: nnx.State,
    model_config: BertConfig | T5Config,
    kind: str,
    tokenizer: Tokenizer,
    out_dir: str,
) -> None:
    """Writes config.json, model.safetensors and the tokenizer files of ``params``.

    The directory appears whole or not at all (`convert.new_directory`).
    """
    _kind(kind, "kind")
    with convert.new_directory(out_dir) as partial:
        if kind == "t5":
            t5_weights.save_hf(params, model_config, partial)
        else:
            # ALBERT's convention: [CLS] begins and [SEP] ends a sequence.
            bert_weights.save_hf(
                params,
                model_config,
                kind,
                partial,
                pad_token_id=tokenizer.pad_id,
                bos_token_id=tokenizer.cls_id,
                eos_token_id=tokenizer.sep_id,
            )
        max_length = None if kind == "t5" else model_config.max_position_embeddings
        save_tokenizer(tokenizer, kind, partial, model_max_length=max_length)


def spm_backend(model_path: str):
    """A `tokenizers.Tokenizer` that encodes like the sentencepiece model at ``model_path``.

    Normalizer, pre-tokenizer, byte fallback and user-defined pieces follow the model proto.
    The proto is parsed with transformers' bundled protobuf module: sentencepiece's own
    generated module needs protobuf >= 7, and apache-beam pins protobuf < 7.
    """
    from transformers.convert_slow_tokenizer import SpmConverter
    from transformers.utils import sentencepiece_model_pb2_new

    proto = sentencepiece_model_pb2_new.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if backend is None:
        raise ValueError(f"{model_path}: not a unigram sentencepiece model")
    return backend


def save_tokenizer(
    tokenizer: Tokenizer, kind: str, out_dir: str, *, model_max_length: int | None = None
) -> None:
    """Writes spiece.model, tokenizer.json and tokenizer_config.json (see module docstring)."""
    from tokenizers import processors
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    backend = spm_backend(tokenizer.model_path)
    special = dict(unk_token=tokenizer.id_to_piece(tokenizer.unk_id))
    special["pad_token"] = tokenizer.id_to_piece(tokenizer.pad_id)
    if kind == "t5":
        eos = tokenizer.id_to_piece(tokenizer.eos_id)
        backend.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {eos}:0",
            pair=f"$A:0 {eos}:0 $B:1 {eos}:1",
            special_tokens=[(eos, tokenizer.eos_id)],
        )
        # Added in this order they get ids spm_size.. : <extra_id_i> = vocab_size - 1 - i.
        sentinels = [f"<extra_id_{i}>" for i in reversed(range(tokenizer.extra_ids))]
        special.update(eos_token=eos, extra_special_tokens=sentinels)
    else:
        cls, sep = tokenizer.id_to_piece(tokenizer.cls_id), tokenizer.id_to_piece(tokenizer.sep_id)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, tokenizer.cls_id), (sep, tokenizer.sep_id)],
        )
        mask = tokenizer.id_to_piece(tokenizer.mask_id)
        special.update(cls_token=cls, sep_token=sep, mask_token=mask, bos_token=cls, eos_token=sep)
        # Sentence pairs need their segment ids, as from BertTokenizer / AlbertTokenizer.
        special["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    if model_max_length is not None:
        special["model_max_length"] = model_max_length
    hf_tokenizer = TokenizersBackend(tokenizer_object=backend, **special)
    if len(hf_tokenizer) != tokenizer.vocab_size:
        raise ValueError(
            f"Hugging Face tokenizer has {len(hf_tokenizer)} ids, ours {tokenizer.vocab_size}"
        )
    hf_tokenizer.save_pretrained(out_dir)
    shutil.copyfile(tokenizer.model_path, os.path.join(out_dir, "spiece.model"))


def read_hf_config(hf_dir: str) -> tuple[str, dict]:
    """``(model_type, fields)`` of ``hf_dir/config.json``; model_type is one of `KINDS`."""
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: not a Hugging Face model directory")
    try:
        with open(config_path, encoding="utf-8") as f:
            fields = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path}: not JSON ({error})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{config_path}: expected a JSON object, got {type(fields).__name__}")
    return _kind(fields.get("model_type"), f"{config_path} model_type"), fields


def import_hf(hf_dir: str, config: ml_collections.ConfigDict | BertConfig | T5Config) -> nnx.State:
    """Our parameters from a Hugging Face BERT / ALBERT / T5 directory.

    BERT and ALBERT give `BertForPreTraining` params (pretraining heads the
    directory lacks keep a fresh initialisation), T5 gives
    `T5ForConditionalGeneration` params.

    Args:
      hf_dir: holds config.json and model.safetensors (sharded or not; or
        pytorch_model.bin, which needs torch).
      config: the run config the params must fit (its model is built as
        ``models.registry.model_config`` builds it), or that model config itself.
        The params come in its layout (stacked when ``scan_layers``).

    Raises:
      ValueError: the model type or an architecture field (vocab_size,
        hidden_size, num_layers, ...) differs from ``config``; all differing
        fields are named. Dropout, dtypes, initializer range, attention,
        remat_policy and scan_layers may differ.
    """
    kind, hf_fields = read_hf_config(hf_dir)
    if isinstance(config, ml_collections.ConfigDict):
        wanted = _kind(config.model.name, "config.model.name")
        if wanted != kind:
            raise ValueError(
                f"config.model.name={wanted!r} but {hf_dir}/config.json has model_type {kind!r}"
            )
        expected = registry.model_config(config, registry.tokenizer(config).vocab_size)
    else:
        expected = config
    loaded = _config_from_hf(kind, hf_fields, hf_dir)
    # Check the architecture before reading (possibly gigabytes of) weights.
    check_fits(loaded, expected, origin=hf_dir)
    state_dict = convert.read_state_dict(hf_dir)
    if kind == "t5":
        state = t5_weights.from_hf_state_dict(state_dict, loaded)
    else:
        state = bert_weights.from_hf_state_dict(state_dict, loaded, kind)
    return registry.family(kind).stack_layers(state, expected)  # the config's layer layout


def load_hf(hf_dir: str, kinds: tuple[str, ...] = KINDS) -> tuple[BertConfig | T5Config, nnx.State]:
    """The model config a Hugging Face directory describes, and its parameters.

    For callers that take the architecture from the directory (fine-tuning with
    ``init=hf``): `import_hf` against the directory's own config.

    Raises:
      ValueError: the directory's model_type is not one of ``kinds``.
    """
    kind, hf_fields = read_hf_config(hf_dir)
    if kind not in kinds:
        raise ValueError(f"{hf_dir}/config.json: model_type {kind!r}, this needs one of {kinds}")
    config = _config_from_hf(kind, hf_fields, hf_dir)
    return config, import_hf(hf_dir, config)


def _config_from_hf(kind: str, hf_fields: dict, hf_dir: str) -> BertConfig | T5Config:
    """The model config of ``hf_dir/config.json``; ValueError naming the file and field."""
    try:
        if kind == "t5":
            return t5_weights.config_from_hf(hf_fields)
        return bert_weights.config_from_hf(hf_fields, kind)
    except (ValueError, TypeError) as error:  # a field missing, or of the wrong type
        raise ValueError(f"{os.path.join(hf_dir, 'config.json')}: {error}") from None


def check_fits(
    loaded: BertConfig | T5Config, expected: BertConfig | T5Config, *, origin: str
) -> None:
    """Raises ValueError naming every architecture field where the two configs differ."""
    if type(loaded) is not type(expected):
        raise ValueError(
            f"{origin} holds a {type(loaded).__name__} model, the config is a "
            f"{type(expected).__name__}"
        )
    diffs = [
        f"{field.name}: {origin}={getattr(loaded, field.name)!r} "
        f"config={getattr(expected, field.name)!r}"
        for field in dataclasses.fields(expected)
        if field.name not in _TRAINING_ONLY_FIELDS
        and getattr(loaded, field.name) != getattr(expected, field.name)
    ]
    if diffs:
        raise ValueError(
            f"the Hugging Face model in {origin} does not fit the config: {'; '.join(diffs)}"
        )


def _kind(name: str | None, where: str) -> str:
    if name not in KINDS:
        raise ValueError(f"{where}={name!r}: export/import supports {KINDS}")
    return name
