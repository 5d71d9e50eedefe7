"""Exported arrays and the array batch iterator (no TensorFlow)."""

import json

import numpy as np
import pytest

from padir.data import arrays
from padir.data import iterator


def _ids(batch):
  """Row ids of a batch of the synthetic split (token value - 3); -3 marks padding rows."""
  return batch['encoder_input_tokens'][:, 0].astype(int) - 3


def _iterate(path, batch_size, n, **kwargs):
  it = arrays.ArrayBatchIterator(arrays.ArrayDataset.load(path), batch_size, **kwargs)
  return it, [next(it) for _ in range(n)]


def test_load_round_trip_and_metadata(synthetic_split):
  ds = arrays.ArrayDataset.load(synthetic_split, verify=True)
  assert ds.num_examples == 103
  assert ds.feature_lengths == {'encoder_input_tokens': 6, 'decoder_target_tokens': 6,
                                'decoder_loss_weights': 6}
  assert ds.vocabulary['kind'] == 'byte'
  assert isinstance(ds.arrays['encoder_input_tokens'], np.memmap)
  assert not isinstance(arrays.ArrayDataset.load(synthetic_split, mmap=False).arrays[
      'encoder_input_tokens'], np.memmap)


def test_load_errors_name_the_file(synthetic_split, tmp_path):
  with pytest.raises(FileNotFoundError, match='not an exported split'):
    arrays.ArrayDataset.load(tmp_path)
  np.save(synthetic_split / 'decoder_target_tokens.npy', np.zeros((103, 5), np.int32))
  with pytest.raises(ValueError, match=r'decoder_target_tokens\.npy: int32\[103, 5\]'):
    arrays.ArrayDataset.load(synthetic_split)
  np.save(synthetic_split / 'decoder_target_tokens.npy', np.zeros((103, 6), np.int32))
  arrays.ArrayDataset.load(synthetic_split)  # same shape: loads unless verified
  with pytest.raises(ValueError, match='changed since it was exported'):
    arrays.ArrayDataset.load(synthetic_split, verify=True)
  (synthetic_split / 'decoder_loss_weights.npy').unlink()
  with pytest.raises(FileNotFoundError, match='decoder_loss_weights.npy'):
    arrays.ArrayDataset.load(synthetic_split)


def test_vocabulary_mismatch_is_refused(synthetic_split):
  arrays.ArrayDataset.load(synthetic_split, vocabulary='byte')
  with pytest.raises(ValueError, match='vocabulary differs'):
    arrays.ArrayDataset.load(synthetic_split, vocabulary='bible')
  with pytest.raises(ValueError, match='vocabulary differs'):
    arrays.ArrayDataset.load(synthetic_split, vocabulary='byte:50')


def test_shuffling_is_seeded_and_reshuffles_every_epoch(synthetic_split):
  _, a = _iterate(synthetic_split, 10, 20, seed=1)
  _, b = _iterate(synthetic_split, 10, 20, seed=1)
  _, c = _iterate(synthetic_split, 10, 20, seed=2)
  _, plain = _iterate(synthetic_split, 10, 2, shuffle=False)
  ids = [_ids(x) for x in a]
  assert all(np.array_equal(_ids(x), _ids(y)) for x, y in zip(a, b))
  assert not all(np.array_equal(_ids(x), _ids(y)) for x, y in zip(a, c))
  assert np.array_equal(np.concatenate([_ids(x) for x in plain]), np.arange(20))
  # 10 batches per epoch (3 rows dropped); epochs differ in order and are each duplicate-free.
  epoch0, epoch1 = np.concatenate(ids[:10]), np.concatenate(ids[10:])
  assert len(set(epoch0)) == 100 and len(set(epoch1)) == 100
  assert not np.array_equal(epoch0, epoch1)


def test_without_drop_remainder_every_row_once_and_last_batch_padded(synthetic_split):
  it, batches = _iterate(synthetic_split, 10, 11, seed=3, drop_remainder=False, num_epochs=1)
  assert it.steps_per_epoch == 11
  ids = np.concatenate([_ids(b) for b in batches])
  assert sorted(ids[ids >= 0]) == list(range(103))
  last = batches[-1]
  assert last['encoder_input_tokens'].shape == (10, 6)
  assert (last['decoder_loss_weights'][3:] == 0).all() and (last['encoder_input_tokens'][3:] == 0).all()
  with pytest.raises(StopIteration):
    next(it)


def test_last_rows_name_the_rows_of_each_batch(synthetic_split):
  it = arrays.ArrayBatchIterator(arrays.ArrayDataset.load(synthetic_split), 10, seed=2,
                                 drop_remainder=False, num_epochs=1)
  for batch in it:
    real = it.last_rows >= 0
    np.testing.assert_array_equal(it.last_rows[real], _ids(batch)[real])
  assert (it.last_rows == -1).sum() == 7  # 103 rows: the last batch has 3 real rows


def test_text_file_round_trip(synthetic_split):
  ds = arrays.ArrayDataset.load(synthetic_split)
  assert ds.text() is None
  arrays.write_text(synthetic_split, [f's{i}' for i in range(103)],
                    [[f'r{i}', 'ñ'] for i in range(103)])
  assert ds.text()[7] == {'inputs': 's7', 'references': ['r7', 'ñ']}
  arrays.write_text(synthetic_split, ['a'], [['b']])
  with pytest.raises(ValueError, match='1 lines for 103 rows'):
    ds.text()
  with pytest.raises(ValueError, match='2 inputs but 1'):
    arrays.write_text(synthetic_split, ['a', 'b'], [['c']])


def test_processes_split_each_global_batch_without_overlap(synthetic_split):
  _, single = _iterate(synthetic_split, 12, 16, seed=5)
  per_process = [_iterate(synthetic_split, 12, 16, seed=5, process_index=p,
                          process_count=4)[1] for p in range(4)]
  for step in range(16):
    parts = [_ids(per_process[p][step]) for p in range(4)]
    assert all(len(x) == 3 for x in parts)
    assert sorted(np.concatenate(parts)) == sorted(_ids(single[step]))


def test_resume_from_json_state_continues_exactly(synthetic_split):
  it, _ = _iterate(synthetic_split, 8, 17, seed=9)  # 12 batches per epoch: crosses an epoch
  state = json.loads(json.dumps(it.get_state()))
  assert (state['epoch'], state['step']) == (1, 5)
  expected = [next(it) for _ in range(15)]
  for count, index in ((1, 0), (2, 1)):  # also under another process layout
    resumed = arrays.ArrayBatchIterator(arrays.ArrayDataset.load(synthetic_split), 8, seed=9,
                                        process_index=index, process_count=count)
    resumed.set_state(state)
    got = [next(resumed) for _ in range(15)]
    for e, g in zip(expected, got):
      assert set(_ids(g)) <= set(_ids(e))
      if count == 1:
        assert np.array_equal(_ids(e), _ids(g))


def test_resume_refuses_another_configuration(synthetic_split):
  it, _ = _iterate(synthetic_split, 8, 3, seed=9)
  other = arrays.ArrayBatchIterator(arrays.ArrayDataset.load(synthetic_split), 8, seed=10)
  with pytest.raises(ValueError, match='seed=9'):
    other.set_state(it.get_state())
  with pytest.raises(ValueError, match='Not an array iterator state'):
    other.set_state({'position': 3})


def test_bad_arguments(synthetic_split):
  ds = arrays.ArrayDataset.load(synthetic_split)
  with pytest.raises(ValueError, match='multiple of process_count=4'):
    arrays.ArrayBatchIterator(ds, 10, process_count=4)
  with pytest.raises(ValueError, match='fewer than batch_size'):
    arrays.ArrayBatchIterator(ds, 200)
  with pytest.raises(ValueError, match='process_index=2'):
    arrays.ArrayBatchIterator(ds, 8, process_index=2, process_count=2)


def test_make_batch_iterator_on_an_export(synthetic_split):
  it = iterator.make_batch_iterator(synthetic_split.parent, 'train', 8, seed=0,
                                    process_index=1, process_count=2,
                                    feature_lengths={'inputs': 6, 'targets': 6})
  assert isinstance(it, iterator.BatchIterator)
  assert it.element_spec['decoder_target_tokens'] == ((4, 6), np.dtype(np.int32))
  batch = next(it)
  assert {k: v.shape for k, v in batch.items()} == {k: (4, 6) for k in batch}
  assert all(v.dtype == np.int32 for v in batch.values())
  assert iterator.make_batch_iterator(synthetic_split, 'train', 8, process_index=0,
                                      process_count=1).element_spec == {
                                          k: ((8, 6), np.dtype(np.int32)) for k in batch}
  with pytest.raises(ValueError, match='exported with feature lengths'):
    iterator.make_batch_iterator(synthetic_split.parent, 'train', 8,
                                 feature_lengths={'inputs': 64, 'targets': 64})
  with pytest.raises(ValueError, match="holds split 'train', not 'test'"):
    iterator.make_batch_iterator(synthetic_split, 'test', 8)
  with pytest.raises(FileNotFoundError, match='no exported split'):
    iterator.make_batch_iterator(synthetic_split.parent, 'validation', 8)


@pytest.fixture
def ragged_split(tmp_path):
  """103 rows of 8 positions: row i holds token i + 3 in its first 1 + i % 8 (inputs) and
  1 + (i // 8) % 8 (targets) positions, then padding."""
  n, length = 103, 8
  rows = np.arange(n)
  ids = (rows[:, None] + 3) * np.ones((1, length), np.int64)
  enc = np.where(np.arange(length)[None] < (1 + rows % 8)[:, None], ids, 0).astype(np.int32)
  dec = np.where(np.arange(length)[None] < (1 + (rows // 8) % 8)[:, None], ids, 0)
  dec = dec.astype(np.int32)
  meta = {'task': 'ragged', 'split': 'train', 'converter': 'padir',
          'task_feature_lengths': {'inputs': length, 'targets': length},
          'vocabulary': {'kind': 'byte', 'sha256': None, 'num_real_pieces': 259,
                         'extra_ids': 100, 'vocab_size': 359, 'spec': 'byte'}}
  path = tmp_path / 'ragged' / 'train'
  arrays.write_split(path, {'encoder_input_tokens': enc, 'decoder_target_tokens': dec,
                            'decoder_loss_weights': (dec > 0).astype(np.int32)}, meta)
  return path


def test_length_buckets_trim_batches_and_keep_every_token(ragged_split):
  ds = arrays.ArrayDataset.load(ragged_split)
  lengths = arrays.row_lengths(ds)
  assert lengths[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 2, 2]
  plain = arrays.ArrayBatchIterator(ds, 8, seed=4, drop_remainder=False)
  it = arrays.ArrayBatchIterator(ds, 8, seed=4, drop_remainder=False, length_buckets=(4, 2))
  assert it.length_buckets == (2, 4, 8)
  assert it.steps_per_epoch == plain.steps_per_epoch == 13
  seen, shapes = [], set()
  for _ in range(it.steps_per_epoch):
    batch = next(it)
    width = batch['encoder_input_tokens'].shape[1]
    shapes.add(width)
    real = it.last_rows[it.last_rows >= 0]
    seen += real.tolist()
    assert all(v.shape == (8, width) for v in batch.values())
    assert lengths[real].max() <= width  # nothing cut off ...
    for name, full in ds.arrays.items():  # ... and each row is its full row, trimmed
      np.testing.assert_array_equal(batch[name][:len(real)], np.asarray(full)[real, :width])
  assert sorted(seen) == list(range(103))  # every row once per epoch
  assert shapes == {2, 4, 8}
  assert [s['encoder_input_tokens'] for s in it.batch_shapes] == [(8, 2), (8, 4), (8, 8)]
  assert it.get_state()['epoch'] == 1


def test_length_buckets_shuffle_and_resume_exactly(ragged_split):
  ds = arrays.ArrayDataset.load(ragged_split)
  def rows(it, n):
    out = []
    for _ in range(n):
      next(it)
      out.append(it.last_rows.copy())
    return out

  first = arrays.ArrayBatchIterator(ds, 8, seed=5, length_buckets=(4,))
  epoch0, epoch1 = rows(first, 12), rows(first, 12)
  assert not all(np.array_equal(a, b) for a, b in zip(epoch0, epoch1))  # reshuffled
  again = arrays.ArrayBatchIterator(ds, 8, seed=5, length_buckets=(4,))
  for _ in range(5):
    next(again)
  state = json.loads(json.dumps(again.get_state()))
  resumed = arrays.ArrayBatchIterator(ds, 8, seed=5, length_buckets=(4,))
  resumed.set_state(state)
  for expected in epoch0[5:] + epoch1:
    next(resumed)
    np.testing.assert_array_equal(resumed.last_rows, expected)
  with pytest.raises(ValueError, match='length_buckets'):
    arrays.ArrayBatchIterator(ds, 8, seed=5).set_state(state)
  with pytest.raises(ValueError, match='positive integer'):
    arrays.ArrayBatchIterator(ds, 8, length_buckets=(0, 4))
  with pytest.raises(ValueError, match='needs an exported split'):
    iterator.make_batch_iterator('some_task', 'train', 8, length_buckets=(16,),
                                 feature_lengths={'inputs': 32, 'targets': 32})
