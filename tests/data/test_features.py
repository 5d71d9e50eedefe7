"""Feature converters: PaDIR (no shift, loss on every target token) and the AR path."""

import numpy as np
import pytest

seqio = pytest.importorskip('seqio')
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from padir.data import features  # pylint: disable=wrong-import-position
from padir.data import tasks  # pylint: disable=wrong-import-position,unused-import


def _convert(converter, examples, lengths):
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={k: tf.TensorSpec([None], tf.int32) for k in examples[0]})
  return list(converter(ds, lengths).as_numpy_iterator())


EXAMPLES = [{'inputs': [7, 8, 5, 1], 'targets': [3, 9, 1]},
            {'inputs': [8, 4, 9, 3, 1], 'targets': [4, 1]}]


def test_padir_converter_keeps_targets_unshifted_with_eos_and_weights():
  out = _convert(features.get_feature_converter('padir'), EXAMPLES,
                 {'inputs': 6, 'targets': 5})
  assert set(out[0]) == {'encoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights'}
  np.testing.assert_array_equal(out[0]['encoder_input_tokens'], [7, 8, 5, 1, 0, 0])
  np.testing.assert_array_equal(out[0]['decoder_target_tokens'], [3, 9, 1, 0, 0])
  np.testing.assert_array_equal(out[0]['decoder_loss_weights'], [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(out[1]['decoder_target_tokens'], [4, 1, 0, 0, 0])
  np.testing.assert_array_equal(out[1]['decoder_loss_weights'], [1, 1, 0, 0, 0])
  assert all(v.dtype == np.int32 for v in out[0].values())


def test_padir_converter_refuses_packing_and_reports_model_lengths():
  with pytest.raises(ValueError, match='cannot be packed'):
    features.PadirFeatureConverter(pack=True)
  assert features.PadirFeatureConverter().get_model_feature_lengths(
      {'inputs': 64, 'targets': 32}) == {'encoder_input_tokens': 64,
                                         'decoder_target_tokens': 32,
                                         'decoder_loss_weights': 32}


def test_encdec_converter_shifts_for_the_autoregressive_path():
  converter = features.get_feature_converter('encdec')
  assert isinstance(converter, seqio.EncDecFeatureConverter) and not converter.pack
  out = _convert(converter, EXAMPLES, {'inputs': 6, 'targets': 5})
  np.testing.assert_array_equal(out[0]['decoder_input_tokens'], [0, 3, 9, 1, 0])
  np.testing.assert_array_equal(out[0]['decoder_target_tokens'], [3, 9, 1, 0, 0])
  assert features.get_feature_converter('encdec', pack=True).pack


def test_unknown_converter():
  with pytest.raises(ValueError, match="choose one of \\['encdec', 'padir'\\]"):
    features.get_feature_converter('mlm')


def test_bible_task_through_the_padir_converter():
  ds = seqio.get_dataset('bible_es_en', {'inputs': 32, 'targets': 32},
                         features.get_feature_converter('padir'), dataset_split='validation',
                         shuffle=False)
  batch = next(ds.batch(16).as_numpy_iterator())
  weights, targets = batch['decoder_loss_weights'], batch['decoder_target_tokens']
  np.testing.assert_array_equal(weights, (targets != 0).astype(np.int32))
  lengths = weights.sum(axis=1)
  assert (targets[np.arange(16), lengths - 1] == 1).all()  # EOS is the last real token
