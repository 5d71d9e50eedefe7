"""Builds a model from gin: vocabulary -> special ids -> network config -> model.

``build_model`` is what ``MODEL = @padir.builders.build_model()`` calls in the objective gin
files. It derives everything that depends on the vocabulary and the feature lengths, so gin
files never repeat ids or sizes:

* special ids from the vocabulary (`padir.special_ids`, through its tokenizer);
* ``T5Config.vocab_size`` = the vocabulary size rounded up to ``vocab_multiple`` (T5: 128);
* ``length_id`` = the [LENGTH] id and ``max_target_length`` = the target feature length;
* ``decoder_mode`` from the model class (bidirectional for PaDIR, causal for AR).

Architecture knobs are bound on :func:`network_config`: ``size`` picks a preset (tiny, small,
base, large, xl) and any ``T5Config`` field can be overridden::

  padir.builders.network_config.size = 'base'
  padir.builders.network_config.dropout_rate = 0.3
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from padir import gin_utils
from padir import models as models_lib
from padir.network import T5Config

# Filled in by build_model; never set them in gin.
_DERIVED = ('vocab_size', 'length_id', 'max_target_length', 'decoder_mode')


def network_config(size: str = 'tiny', **overrides: Any) -> dict[str, Any]:
  """Architecture knobs: a preset name and T5Config field overrides (checked by name).

  Returns:
    ``{'size': ..., 'overrides': {...}}`` consumed by :func:`build_model`.

  Raises:
    ValueError: an unknown T5Config field, or a field that is derived from the data.
  """
  fields = {f.name for f in dataclasses.fields(T5Config)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'padir.builders.network_config: unknown T5Config field(s) {unknown}; '
                     f'the fields are {sorted(fields)}.')
  derived = sorted(set(overrides) & set(_DERIVED) - {'vocab_size'})
  if derived:
    raise ValueError(f'padir.builders.network_config: {derived} are derived from the vocabulary '
                     'and TASK_FEATURE_LENGTHS; do not set them.')
  return {'size': size, 'overrides': dict(overrides)}


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def build_model(model_cls: Callable[..., Any] = models_lib.PadirModel,
                *,
                vocabulary: Any,
                task_feature_lengths: Mapping[str, int],
                network: Mapping[str, Any] | None = None,
                mask_range_length: int = 0,
                vocab_multiple: int = 128,
                model_kwargs: Mapping[str, Any] | None = None) -> Any:
  """Builds a padir model for a vocabulary and task feature lengths.

  Args:
    model_cls: ``padir.models.PadirModel`` or ``padir.models.EncoderDecoderModel`` (its other
      arguments, e.g. ``corruption``, come from gin bindings on the class).
    vocabulary: anything ``padir.data.vocab.load_tokenizer`` accepts ('bible', 'byte', a
      .model path).
    task_feature_lengths: ``{'inputs': L_in, 'targets': L}``.
    network: the result of :func:`network_config` (default: its gin-bound value).
    mask_range_length: reserve this many [MASK_i] ids (for the 'mask_range' input scheme; use
      the target length).
    vocab_multiple: round the embedding rows up to a multiple of this.
    model_kwargs: more arguments of ``model_cls`` (they win over its gin bindings).

  Returns:
    The model.
  """
  from padir.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top

  if 'targets' not in task_feature_lengths or 'inputs' not in task_feature_lengths:
    raise ValueError(f'TASK_FEATURE_LENGTHS={dict(task_feature_lengths)} needs "inputs" and '
                     '"targets", e.g. {"inputs": 128, "targets": 128}.')
  network = network if network is not None else _configured_network()
  tokenizer = vocab_lib.load_tokenizer(vocabulary)
  overrides = dict(network.get('overrides', {}))
  vocab_size = overrides.pop('vocab_size', None) or _round_up(tokenizer.vocab_size,
                                                              vocab_multiple)
  ids = tokenizer.special_ids(model_vocab_size=vocab_size, mask_range_length=mask_range_length)
  decoder_mode = getattr(model_cls, '_DECODER_MODE', None) or 'bidirectional'
  config = T5Config.preset(
      network.get('size', 'tiny'), vocab_size=vocab_size, decoder_mode=decoder_mode,
      length_id=ids.length, max_target_length=int(task_feature_lengths['targets']),
      **overrides)
  model = model_cls(network_config=config, special_ids=ids, **dict(model_kwargs or {}))
  model.vocabulary = tokenizer
  return model


def _configured_network() -> dict[str, Any]:
  import gin  # pylint: disable=g-import-not-at-top
  return gin.get_configurable('padir.builders.network_config')()


gin_utils.configurable(network_config, module='padir.builders')
gin_utils.configurable(build_model, module='padir.builders')
