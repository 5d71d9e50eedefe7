"""seqio tasks: Bible, user TSV, distilled, WMT (mocked TFDS); over-long handling; registry."""

import importlib
import os

import numpy as np
import pytest

seqio = pytest.importorskip('seqio')
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,wrong-import-position

from padir.data import corpus  # pylint: disable=wrong-import-position
from padir.data import metrics  # pylint: disable=wrong-import-position
from padir.data import preprocessors  # pylint: disable=wrong-import-position
from padir.data import tasks  # pylint: disable=wrong-import-position
from padir.data import vocab  # pylint: disable=wrong-import-position

LENGTHS = {'inputs': 128, 'targets': 128}


def _examples(name, split='validation', lengths=None, **kwargs):
  ds = tasks.get_task(name).get_dataset(lengths or LENGTHS, split=split, shuffle=False, **kwargs)
  return list(ds.as_numpy_iterator())


def test_default_tasks_are_registered_with_three_splits():
  for name in [*tasks.BIBLE_TASKS, *tasks.WMT_TASKS]:
    assert tuple(tasks.get_task(name).splits) == ('train', 'validation', 'test')


def test_bible_es_en_examples_and_references():
  exs = _examples('bible_es_en')
  dev = corpus.read_bible('validation')
  assert len(exs) == corpus.BIBLE_NUM_EXAMPLES['validation']
  tok = vocab.load_tokenizer('bible')
  first = exs[0]
  assert first['inputs_pretokenized'].decode() == dev['es'][0]
  assert first['targets_pretokenized'].decode() == dev['en'][0]
  assert [r.decode() for r in first['references']] == [dev['en'][0], dev['en_kjv'][0]]
  assert first['inputs'][-1] == 1 and first['targets'][-1] == 1  # EOS appended
  assert list(first['targets'][:-1]) == tok.encode(dev['en'][0])
  assert tok.decode(first['inputs']) == dev['es'][0]


def test_bible_en_es_has_one_reference_and_the_seqio_eval_path_scores_it(capsys):
  exs = _examples('bible_en_es')[:50]
  task = tasks.get_task('bible_en_es')
  assert all(len(ex['references']) == 1 for ex in exs)
  targets = [task.postprocess_fn(ex['targets_pretokenized'], example=ex, is_target=True)
             for ex in exs]
  predictions = [task.postprocess_fn(ex['targets_pretokenized'].decode()) for ex in exs]
  (metric_fn,) = task.metric_fns
  assert metric_fn(targets, predictions)['bleu'] == pytest.approx(100)
  assert 'nrefs:1' in capsys.readouterr().out


def test_es_en_metrics_use_both_english_references(capsys):
  exs = _examples('bible_es_en')[:100]
  task = tasks.get_task('bible_es_en')
  targets = [task.postprocess_fn(ex['targets_pretokenized'], example=ex, is_target=True)
             for ex in exs]
  kjv = [ex['references'][1].decode() for ex in exs]
  assert task.metric_fns[0](targets, kjv)['bleu'] == pytest.approx(100)
  assert 'nrefs:2' in capsys.readouterr().out


@pytest.mark.parametrize('mode', ['truncate', 'filter'])
def test_overlong_examples_are_counted_and_keep_their_eos(mode):
  name = f'bible_overlong_{mode}'
  tasks.register_bible_task(name, 'es', 'en', overlong=mode)
  preprocessors.reset_overlong_counts(name)
  full = _examples('bible_es_en', lengths={'inputs': 1000, 'targets': 1000})
  over = sum(len(ex['targets']) > 20 for ex in full)
  over_inputs = sum(len(ex['inputs']) > 20 for ex in full)
  exs = _examples(name, lengths={'inputs': 20, 'targets': 20})
  counts = preprocessors.overlong_counts(name)[name]
  assert all(len(ex['targets']) <= 20 and ex['targets'][-1] == 1 for ex in exs)
  assert all(len(ex['inputs']) <= 20 and ex['inputs'][-1] == 1 for ex in exs)
  if mode == 'truncate':
    assert len(exs) == len(full)
    assert counts == {'targets_truncated': over, 'inputs_truncated': over_inputs}
  else:
    dropped = sum(len(a['inputs']) > 20 or len(a['targets']) > 20 for a in full)
    assert len(exs) == len(full) - dropped
    assert counts == {'targets_filtered': over, 'inputs_filtered': over_inputs,
                      'examples_filtered': dropped}


def test_bad_overlong_mode():
  with pytest.raises(ValueError, match="'truncate', 'filter'"):
    tasks.register_bible_task('bible_bad_mode', 'es', 'en', overlong='cut')


def test_unknown_task_suggests_close_names():
  with pytest.raises(ValueError, match=r"Unknown task 'bible_es_em'\. Did you mean bible_es_en"):
    tasks.get_task('bible_es_em')
  with pytest.raises(ValueError, match='wmt14_de_en'):
    tasks.get_task('wmt14-de-en')


def test_reimporting_the_module_does_not_fail():
  importlib.reload(tasks)
  importlib.reload(tasks)
  assert len(_examples('bible_en_es', split='test')) == corpus.BIBLE_NUM_EXAMPLES['test']


def test_tsv_task_with_bad_rows_and_reference_columns(tmp_path, write_lines, caplog):
  lines = [b'src\ttgt\ttgt2'] + [f'hola {i}\thello {i}\thi {i}'.encode() for i in range(60)]
  lines.insert(3, b'broken row')
  train = write_lines(tmp_path / 'train.tsv.gz', lines, gz=True)
  tasks.register_tsv_task('my_tsv', train=str(train), validation=str(train),
                          source_column='src', target_column='tgt',
                          reference_columns=['tgt', 'tgt2'], max_bad_fraction=0.05)
  exs = _examples('my_tsv')
  assert len(exs) == 60
  assert exs[0]['inputs_pretokenized'] == b'hola 0'
  assert list(exs[0]['references']) == [b'hello 0', b'hi 0']
  assert str(train) in caplog.text and 'lines 4' in caplog.text
  assert tuple(tasks.get_task('my_tsv').splits) == ('train', 'validation')
  with pytest.raises(ValueError, match="Unknown split 'test'"):
    tasks.get_task('my_tsv').get_dataset(LENGTHS, split='test')


def test_tsv_task_errors(tmp_path, write_lines):
  with pytest.raises(FileNotFoundError, match='train file .*nope.tsv not found'):
    tasks.register_tsv_task('bad', train=str(tmp_path / 'nope.tsv'))
  with pytest.raises(ValueError, match='at least one'):
    tasks.register_tsv_task('bad')
  path = write_lines(tmp_path / 'x.tsv', [b'source\ttarget', b'a\tb'])
  with pytest.raises(ValueError, match='does not exist'):
    tasks.register_tsv_task('bad', train=str(path), vocabulary=str(tmp_path / 'missing.model'))
  with pytest.raises(ValueError, match='padir needs 3'):  # [MASK], [BOS], [LENGTH]
    tasks.register_tsv_task('bad', train=str(path), vocabulary='byte:2')
  tasks.register_tsv_task('bad_rows', train=str(write_lines(
      tmp_path / 'y.tsv', [b'source\ttarget', b'a\tb', b'c,d'])))
  with pytest.raises(corpus.BadInputError, match='y.tsv'):
    _examples('bad_rows', split='train')


def test_distilled_task_trains_on_teacher_and_evaluates_on_base(tmp_path):
  dev = corpus.read_bible('validation')
  path = tmp_path / 'distilled.tsv'
  corpus.write_distilled_tsv(path, dev['es'][:7], [f'teacher {i}' for i in range(7)])
  tasks.register_distilled_task('bible_es_en_distilled', str(path), 'bible_es_en')
  train = _examples('bible_es_en_distilled', split='train')
  assert [ex['targets_pretokenized'] for ex in train] == [f'teacher {i}'.encode()
                                                          for i in range(7)]
  assert train[0]['inputs_pretokenized'].decode() == dev['es'][0]
  base = _examples('bible_es_en')
  distilled = _examples('bible_es_en_distilled')
  assert len(base) == len(distilled)
  for a, b in zip(base[:20], distilled[:20]):
    assert np.array_equal(a['targets'], b['targets']) and len(b['references']) == 2
  task = tasks.get_task('bible_es_en_distilled')
  assert task.output_features['targets'].vocabulary is tasks.get_task(
      'bible_es_en').output_features['targets'].vocabulary
  with pytest.raises(ValueError, match='Unknown task'):
    tasks.register_distilled_task('x', str(path), 'no_such_task')


def test_source_shards_are_disjoint_whatever_the_seeds():
  source = tasks.get_task('bible_es_en').source
  seen = []
  for index, seed in ((0, 1), (1, 2), (2, None)):
    ds = source.get_dataset('validation', shuffle=True, seed=seed,
                            shard_info=seqio.ShardInfo(index, 3))
    seen.append([ex['inputs'] for ex in ds.as_numpy_iterator()])
  flat = [x for shard in seen for x in shard]
  assert len(flat) == len(set(flat)) == corpus.BIBLE_NUM_EXAMPLES['validation']


@pytest.mark.parametrize('name', sorted(tasks.WMT_TASKS))
def test_wmt_tasks_read_tfds_with_mock_data(name):
  tfds_name, src, tgt = tasks.WMT_TASKS[name]
  with tfds.testing.mock_data(num_examples=4):
    raw = list(tfds.load(tfds_name, split='validation', shuffle_files=False)
               .as_numpy_iterator())
    exs = _examples(name)
  assert len(exs) == 4
  for r, ex in zip(raw, exs):
    assert ex['inputs_pretokenized'] == r[src]
    assert ex['targets_pretokenized'] == r[tgt]
    assert list(ex['references']) == [r[tgt]]
    assert ex['targets'][-1] == 1


def test_wmt_tasks_can_be_reregistered_with_another_vocabulary():
  spm_file = os.path.join(os.path.dirname(seqio.__file__), 'test_data', 'sentencepiece',
                          'sentencepiece.model')
  try:
    tasks.register_wmt_tasks(vocabulary=f'sentencepiece:{spm_file}:10')
    vocabulary = tasks.get_task('wmt14_de_en').output_features['inputs'].vocabulary
    assert vocabulary.vocab_size == 36
  finally:
    tasks.register_wmt_tasks()
  assert tasks.get_task('wmt14_de_en').output_features['inputs'].vocabulary.vocab_size == 359


def test_vocabulary_training_on_a_wmt_task(tmp_path):
  from padir.data import train_vocab  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'wmt.model'
  with tfds.testing.mock_data(num_examples=40):
    assert train_vocab.main(['--task=wmt16_ro_en', '--max_sentences=60', '--vocab_size=20',
                             f'--output={out}']) == 0
  tok = vocab.load_tokenizer(str(out))
  assert tok.num_real_pieces == 20 and tok.special_ids().mask == 119
