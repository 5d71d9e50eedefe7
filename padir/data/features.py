"""Feature conversion: task features (inputs, targets) -> the model features a batch carries.

PaDIR (``'padir'``)::

  encoder_input_tokens   [L_in]  the source with EOS, padded with 0
  decoder_target_tokens  [L]     the target with EOS, NOT shifted, padded with 0
  decoder_loss_weights   [L]     1 on every non-pad target position (EOS included), else 0

The decoder input is not a data feature: the objective corrupts ``decoder_target_tokens`` on
device from a PRNG key (padir/objectives.py), so masking ratios can follow the training step.
The [LENGTH] slot is prepended inside the network, so encoder inputs are plain. PaDIR examples
are never packed: the length head predicts one length per row and the bidirectional decoder
would attend across packed examples.

Autoregressive (``'encdec'``): seqio's EncDecFeatureConverter (decoder_input_tokens shifted
right with BOS 0; packing allowed).
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

_Spec = seqio.FeatureConverter.FeatureSpec


class PadirFeatureConverter(seqio.FeatureConverter):
  """inputs/targets -> encoder_input_tokens, decoder_target_tokens, decoder_loss_weights."""

  TASK_FEATURES = {
      'inputs': _Spec(dtype=tf.int32),
      'targets': _Spec(dtype=tf.int32),
  }
  MODEL_FEATURES = {
      'encoder_input_tokens': _Spec(dtype=tf.int32),
      'decoder_target_tokens': _Spec(dtype=tf.int32),
      'decoder_loss_weights': _Spec(dtype=tf.int32),
  }
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, pack: bool = False, **kwargs):
    if pack:
      raise ValueError(
          'PaDIR examples cannot be packed: the length head predicts one target length per '
          'row and the bidirectional decoder would attend across packed examples. Use '
          'pack=False.')
    super().__init__(pack=False, **kwargs)

  def _convert_example(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    out = {
        'encoder_input_tokens': features['inputs'],
        'decoder_target_tokens': features['targets'],
        'decoder_loss_weights': seqio.non_padding_position(features['targets']),
    }
    out.update({k: features[k] for k in self._passthrough_features})
    return out

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    ds = self._pack_or_pad(ds, task_feature_lengths)
    return ds.map(self._convert_example, num_parallel_calls=tf.data.experimental.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    return {
        'encoder_input_tokens': task_feature_lengths['inputs'],
        'decoder_target_tokens': task_feature_lengths['targets'],
        'decoder_loss_weights': task_feature_lengths['targets'],
    }


FEATURE_CONVERTERS = {
    'padir': PadirFeatureConverter,
    'encdec': seqio.EncDecFeatureConverter,
}


def get_feature_converter(name: str, pack: bool = False) -> seqio.FeatureConverter:
  """'padir' (bidirectional GMLM) or 'encdec' (autoregressive); unpacked by default."""
  if name not in FEATURE_CONVERTERS:
    raise ValueError(f'Unknown feature converter {name!r}; choose one of '
                     f'{sorted(FEATURE_CONVERTERS)}.')
  return FEATURE_CONVERTERS[name](pack=pack)
