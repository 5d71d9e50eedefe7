"""Export to arrays and the seqio batch iterator; both behind make_batch_iterator."""

import json

import numpy as np
import pytest

seqio = pytest.importorskip('seqio')

from padir.data import arrays  # pylint: disable=wrong-import-position
from padir.data import corpus  # pylint: disable=wrong-import-position
from padir.data import export  # pylint: disable=wrong-import-position
from padir.data import features  # pylint: disable=wrong-import-position
from padir.data import iterator  # pylint: disable=wrong-import-position
from padir.data import tasks  # pylint: disable=wrong-import-position
from padir.data import vocab  # pylint: disable=wrong-import-position

LENGTHS = {'inputs': 32, 'targets': 32}


def test_export_writes_the_converted_split_and_its_metadata(bible_validation_export, capsys):
  path = bible_validation_export / 'validation'
  ds = arrays.ArrayDataset.load(path, verify=True, vocabulary='bible')
  meta = ds.metadata
  assert meta['task'] == 'bible_es_en' and meta['split'] == 'validation'
  assert meta['converter'] == 'padir' and meta['task_feature_lengths'] == LENGTHS
  assert meta['num_examples'] == 964
  assert meta['vocabulary'] == vocab.load_tokenizer('bible').fingerprint()
  assert meta['vocabulary']['sha256'] == vocab.BIBLE_VOCAB_SHA256
  assert meta['overlong']['targets_truncated'] > 0  # some verses exceed 31 tokens
  expected = seqio.get_dataset('bible_es_en', LENGTHS, features.get_feature_converter('padir'),
                               dataset_split='validation', shuffle=False)
  for i, ex in enumerate(expected.take(50).as_numpy_iterator()):
    for k, v in ex.items():
      np.testing.assert_array_equal(ds.arrays[k][i], v)


def test_export_writes_sources_and_every_reference_for_evaluation(bible_validation_export):
  ds = arrays.ArrayDataset.load(bible_validation_export / 'validation')
  assert ds.metadata['text_file'] == 'text.jsonl'
  text = ds.text()
  dev = corpus.read_bible('validation')
  assert len(text) == 964
  assert text[5] == {'inputs': dev['es'][5], 'references': [dev['en'][5], dev['en_kjv'][5]]}
  tok = vocab.load_tokenizer('bible')
  # Each row's text is the text its tokens came from (up to truncation).
  for i in (0, 5, 963):
    assert tok.decode(ds.arrays['encoder_input_tokens'][i]) in dev['es'][i]
  # The loader says which rows a batch holds, so sources and references follow the batch.
  it = arrays.ArrayBatchIterator(ds, 10, seed=4, process_index=1, process_count=2)
  batch = next(it)
  for row, tokens in zip(it.last_rows, batch['encoder_input_tokens']):
    np.testing.assert_array_equal(tokens, ds.arrays['encoder_input_tokens'][row])


def test_export_without_text_and_truncation_counts(tmp_path):
  meta = export.export_split('bible_en_es', 'test', {'inputs': 8, 'targets': 8}, tmp_path,
                             write_text=False)
  assert 'text_file' not in meta and arrays.ArrayDataset.load(tmp_path).text() is None
  assert meta['overlong']['inputs_truncated'] > 0 and meta['overlong']['targets_truncated'] > 0


@pytest.mark.parametrize('text,expected', [('inputs=64,targets=32', {'inputs': 64, 'targets': 32}),
                                           ('inputs:16,targets:8', {'inputs': 16, 'targets': 8}),
                                           ('128', {'inputs': 128, 'targets': 128})])
def test_feature_lengths_flag(text, expected):
  assert export.parse_feature_lengths(text) == expected


def test_feature_lengths_flag_errors():
  for bad in ('inputs=64', 'inputs=x,targets=3', 'inputs=1,targets=8'):
    with pytest.raises(Exception, match='feature_lengths'):
      export.parse_feature_lengths(bad)


def test_export_encdec_converter(tmp_path):
  meta = export.export_split('bible_en_es', 'test', {'inputs': 16, 'targets': 16}, tmp_path,
                             converter='encdec')
  assert set(meta['features']) == {'encoder_input_tokens', 'decoder_target_tokens',
                                   'decoder_input_tokens', 'decoder_loss_weights'}
  ds = arrays.ArrayDataset.load(tmp_path)
  np.testing.assert_array_equal(ds.arrays['decoder_input_tokens'][:, 1:],
                                ds.arrays['decoder_target_tokens'][:, :-1])


def test_export_bad_split():
  with pytest.raises(ValueError, match="no split 'dev'"):
    export.export_split('bible_es_en', 'dev', LENGTHS, '/nonexistent')


def test_make_batch_iterator_over_an_export_checks_the_vocabulary(bible_validation_export):
  it = iterator.make_batch_iterator(bible_validation_export, 'validation', 32,
                                    feature_lengths=LENGTHS, vocabulary='bible',
                                    process_index=0, process_count=1)
  assert next(it)['decoder_target_tokens'].shape == (32, 32)
  with pytest.raises(ValueError, match='vocabulary differs'):
    iterator.make_batch_iterator(bible_validation_export, 'validation', 32, vocabulary='byte')


def test_seqio_iterator_batches_resume_and_shards():
  kwargs = dict(feature_lengths=LENGTHS, seed=3)
  it = iterator.make_batch_iterator('bible_es_en', 'validation', 16, process_index=0,
                                    process_count=1, vocabulary='bible', **kwargs)
  assert isinstance(it, iterator.BatchIterator)
  assert it.element_spec == {k: ((16, 32), np.dtype(np.int32)) for k in
                             ('encoder_input_tokens', 'decoder_target_tokens',
                              'decoder_loss_weights')}
  first = [next(it) for _ in range(3)]
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(3)]
  resumed = iterator.make_batch_iterator('bible_es_en', 'validation', 16, process_index=0,
                                         process_count=1, **kwargs)
  resumed.set_state(state)
  for e, g in zip(expected, [next(resumed) for _ in range(3)]):
    for k in e:
      np.testing.assert_array_equal(e[k], g[k])
  again = iterator.make_batch_iterator('bible_es_en', 'validation', 16, process_index=0,
                                       process_count=1, **kwargs)
  np.testing.assert_array_equal(next(again)['encoder_input_tokens'],
                                first[0]['encoder_input_tokens'])
  with pytest.raises(ValueError, match='process_count'):
    iterator.make_batch_iterator('bible_es_en', 'validation', 16, process_index=0,
                                 process_count=2, **kwargs).set_state(state)

  def rows(index):
    shard = iterator.make_batch_iterator('bible_es_en', 'validation', 16, process_index=index,
                                         process_count=2, num_epochs=1, shuffle=False,
                                         drop_remainder=False, **kwargs)
    batches = [b['encoder_input_tokens'] for b in shard]
    assert all(b.shape == (8, 32) for b in batches)
    return {tuple(r) for b in batches for r in b if r.any()}

  a, b = rows(0), rows(1)
  assert not a & b and len(a) + len(b) == 964


def test_seqio_iterator_needs_lengths_and_a_known_task():
  with pytest.raises(ValueError, match='feature_lengths are required'):
    iterator.make_batch_iterator('bible_es_en', 'train', 8)
  with pytest.raises(ValueError, match='Did you mean bible_es_en'):
    iterator.make_batch_iterator('bible_es_e', 'train', 8, feature_lengths=LENGTHS)


def test_uneven_evaluation_split_gives_every_process_the_same_batches_as_the_arrays(
    tmp_path, write_lines):
  words = ['casa', 'perro', 'agua', 'tierra', 'cielo']
  lines = [b'source\ttarget'] + [f'{words[i // 5]} {words[i % 5]}\tx'.encode()
                                  for i in range(17)]
  tasks.register_tsv_task('odd_17', validation=str(write_lines(tmp_path / 'v.tsv', lines)))
  lengths = {'inputs': 16, 'targets': 8}
  export.export_split('odd_17', 'validation', lengths, tmp_path / 'odd')
  common = dict(process_count=2, shuffle=False, num_epochs=1, drop_remainder=False)
  seen = []
  for p in range(2):
    from_task = list(iterator.make_batch_iterator('odd_17', 'validation', 8, process_index=p,
                                                  feature_lengths=lengths, **common))
    from_arrays = list(iterator.make_batch_iterator(tmp_path / 'odd', 'validation', 8,
                                                    process_index=p, **common))
    assert len(from_task) == len(from_arrays) == 3  # ceil(17 / 8) on both processes
    for a, b in zip(from_task, from_arrays):
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    seen += [tuple(r) for b in from_task for r in b['encoder_input_tokens'] if r.any()]
  assert len(seen) == len(set(seen)) == 17
