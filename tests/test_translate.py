"""padir translate and padir.load on tiny AR and PaDIR models trained with padir train."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest

import padir
from padir import infer
from padir import train
from padir import translate

import train_testlib

SENTENCE = 'En el principio'


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  """{'ar': model dir, 'padir': model dir}: 4 steps each on the reverse task."""
  root = tmp_path_factory.mktemp('translate')
  data = train_testlib.write_reverse_task(str(root / 'data'))
  dirs = {}
  for objective in ('ar', 'padir'):
    model_dir = str(root / objective)
    flags = train_testlib.train_flags(data, model_dir, 4, objective=objective, period=4)
    assert train.main(flags) == 0
    dirs[objective] = model_dir
  return dirs


@pytest.mark.parametrize('objective', ['ar', 'padir'])
def test_cli_prints_one_line_and_load_agrees(models, objective):
  model_dir = models[objective]
  out = subprocess.run([sys.executable, '-m', 'padir.cli', 'translate', f'--model_dir={model_dir}'],
                       input=SENTENCE + '\n', capture_output=True, text=True, check=False,
                       timeout=600)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.split('\n')
  assert len(lines) == 2 and lines[1] == '', out.stdout  # one line, newline-terminated
  model = padir.load(model_dir)
  assert model.is_padir == (objective == 'padir')
  assert model.step == 4
  with pytest.warns(UserWarning, match='were cut'):  # the byte model reads 7 bytes
    assert model.translate(SENTENCE) == lines[0]
  assert model.translate([SENTENCE, '', SENTENCE]) == [lines[0], '', lines[0]]


def test_rows_stay_aligned_with_input_lines(models, tmp_path):
  src = tmp_path / 'src.txt'
  src.write_bytes(b'abc\n\n  \r\ncba\nab\n')
  dst = tmp_path / 'out.txt'
  assert translate.run([f'--model_dir={models["padir"]}', f'--input_file={src}',
                        f'--output_file={dst}', '--iterations=2', '--length_beam=3',
                        '--prune_after=1']) == 0
  got = dst.read_text(encoding='utf-8').split('\n')
  assert len(got) == 6 and got[1] == got[2] == '' and got[5] == ''
  model = padir.load(models['padir'])
  assert got[0] == model.translate('abc', iterations=2, length_beam=3, prune_after=1)
  assert got[3] == model.translate('cba', iterations=2, length_beam=3, prune_after=1)


def test_show_refinement_prints_every_pass(models):
  stdout, stderr = io.StringIO(), io.StringIO()
  assert translate.run([f'--model_dir={models["padir"]}', '--iterations=3', '--show_refinement'],
                       stdin=io.StringIO('abc\n'), stdout=stdout, stderr=stderr) == 0
  passes = [l for l in stderr.getvalue().splitlines() if l.strip().startswith('pass ')]
  model = padir.load(models['padir'])
  r = model.refine('abc', iterations=3)
  assert 1 <= len(r.passes) <= 3 and len(passes) == len(r.passes)
  assert len(r.tokens) == len(r.confidences) == len(r.passes)
  assert all(len(t) == r.length for t in r.tokens)
  assert r.passes[-1] == r.translation == stdout.getvalue().rstrip('\n')
  assert all(c <= 0.0 for row in r.confidences for c in row)  # log-probabilities


def test_ar_no_repeat_ngram_flag(models):
  model = padir.load(models['ar'])
  plain = model.translate('abca')
  banned = model.translate('abca', no_repeat_ngram=1)  # no piece twice (one byte per piece)
  assert len(set(banned)) == len(banned)
  stdout = io.StringIO()
  assert translate.run([f'--model_dir={models["ar"]}', '--no_repeat_ngram=1'],
                       stdin=io.StringIO('abca\n'), stdout=stdout, stderr=io.StringIO()) == 0
  cli = stdout.getvalue().rstrip('\n')
  assert cli == ' '.join(banned.split())  # the CLI folds whitespace runs (docs/translate.md)
  if len(set(plain)) < len(plain):  # the untrained model repeats itself: the ban changed it
    assert banned != plain


def test_score(models):
  for objective in ('ar', 'padir'):
    model = padir.load(models[objective])
    best = model.translate('abcd')
    scores = model.score(['abcd', 'abcd', 'dcb'], [best, 'zzzzzz', best])
    assert scores.shape == (3,) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    assert model.score('abcd', 'zzzzzz') == pytest.approx(scores[1], abs=1e-4)  # batch-free
    if objective == 'ar':  # greedy output vs an arbitrary string, under the same model
      assert scores[0] > scores[1]
  with pytest.raises(ValueError, match='as many targets as sources'):
    model.score(['a', 'b'], ['a'])


def test_mistakes_are_one_line(models, tmp_path, capsys):
  assert translate.main([f'--model_dir={models["ar"]}', '--iterations=2']) == 1
  assert 'PaDIR option(s)' in capsys.readouterr().err
  assert translate.main([f'--model_dir={models["padir"]}', '--no_repeat_ngram=4']) == 1
  assert 'AR option(s)' in capsys.readouterr().err
  assert translate.main([f'--model_dir={models["ar"]}', '--no_repeat_ngram=-1']) == 1
  assert 'no_repeat_ngram' in capsys.readouterr().err
  assert translate.main([f'--model_dir={tmp_path / "nowhere"}']) == 1
  assert 'does not exist' in capsys.readouterr().err
  assert translate.main([f'--model_dir={tmp_path}']) == 1
  assert 'has no config.gin' in capsys.readouterr().err
  assert translate.main([f'--model_dir={models["padir"]}', '--checkpoint_step=3']) == 1
  assert 'no checkpoint of step 3' in capsys.readouterr().err
  with pytest.raises(ValueError, match='AR model; refine'):
    padir.load(models['ar']).refine('abc')


def test_the_reranker_can_be_switched_off_per_call(models, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from padir import interactive  # pylint: disable=g-import-not-at-top
  plain = padir.load(models['padir'])
  # A copy of the PaDIR dir whose decoding.json names the AR model as its re-ranker.
  reranked_dir = str(tmp_path / 'padir')
  shutil.copytree(models['padir'], reranked_dir)
  with open(os.path.join(reranked_dir, interactive.DECODING_FILE), 'w', encoding='utf-8') as f:
    f.write('{"length_beam": 3, "rerank_model_dir": "%s", "teacher_fix_threshold": 0.01}'
            % os.path.relpath(models['ar'], reranked_dir))
  reranked = padir.load(reranked_dir)
  assert reranked.reranker is not None
  sources = ['abc', 'cba', 'ab']
  assert reranked.translate(sources, rerank=False) == plain.translate(sources, length_beam=3)
  # pylint: disable-next=protected-access
  rerank_flags = lambda: {key[1] for key in reranked._predictors}
  assert rerank_flags() == {False}  # the decoder compiled without the AR model
  reranked.translate(sources)
  assert rerank_flags() == {False, True}
  with pytest.raises(ValueError, match='rerank=False'):
    reranked.translate(sources, rerank_model_dir=None)
  with pytest.raises(ValueError, match='has no AR reranker'):
    plain.translate(sources, rerank=True)
  # The teacher's fixes need the teacher: off with it (from decoding.json), refused if asked.
  ids = reranked._encode(sources, reranked.feature_lengths['inputs'])  # pylint: disable=protected-access
  assert reranked.decode_ids(ids)[1]['teacher_fixes'].shape == (3,)
  assert 'teacher_fixes' not in reranked.decode_ids(ids, rerank=False)[1]
  with pytest.raises(ValueError, match='rerank=False leaves it out'):
    reranked.translate(sources, rerank=False, teacher_fix_threshold=0.5)
  with pytest.raises(ValueError, match='has none'):
    plain.translate(sources, teacher_fix_threshold=0.5)
  with pytest.raises(ValueError, match='teacher_fix_rounds=2 needs the AR teacher'):
    reranked.translate(sources, rerank=False, teacher_fix_rounds=2)
  assert reranked.translate(sources, rerank=False, teacher_fix_rounds=1) == plain.translate(
      sources, length_beam=3)
  assert reranked.decode_ids(ids, teacher_fix_rounds=2)[1]['teacher_fixes'].shape == (3,)
  assert translate.main([f'--model_dir={models["ar"]}', '--teacher_fix_threshold=0.5']) == 1
  assert translate.main([f'--model_dir={models["ar"]}', '--teacher_fix_rounds=2']) == 1
  stdout = io.StringIO()
  assert translate.run([f'--model_dir={reranked_dir}', '--no_rerank'],
                       stdin=io.StringIO('\n'.join(sources) + '\n'), stdout=stdout) == 0
  expected = plain.translate(sources, length_beam=3)
  assert stdout.getvalue() == ''.join(' '.join(t.split()) + '\n' for t in expected)
  assert translate.main([f'--model_dir={models["ar"]}', '--no_rerank']) == 1


def test_decoding_json_handles_repeats_and_the_flags_undo_it(models, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from padir import interactive  # pylint: disable=g-import-not-at-top
  plain = padir.load(models['padir'])
  merged_dir = str(tmp_path / 'padir')
  shutil.copytree(models['padir'], merged_dir)
  with open(os.path.join(merged_dir, interactive.DECODING_FILE), 'w', encoding='utf-8') as f:
    f.write('{"collapse_repeats": true, "avoid_repeats": true}')
  sources = ['abc', 'cba', 'aabbcc']
  merged = padir.load(merged_dir)
  assert merged.translate(sources) == plain.translate(sources, collapse_repeats=True,
                                                      avoid_repeats=True)
  lines = '\n'.join(sources) + '\n'
  for flag, expected in (('--keep_repeats', dict(avoid_repeats=True)),
                         ('--allow_repeats', dict(collapse_repeats=True))):
    stdout = io.StringIO()
    assert translate.run([f'--model_dir={merged_dir}', flag], stdin=io.StringIO(lines),
                         stdout=stdout) == 0
    assert stdout.getvalue() == ''.join(' '.join(t.split()) + '\n'
                                        for t in plain.translate(sources, **expected))
    assert translate.main([f'--model_dir={models["ar"]}', flag]) == 1


def test_saved_config_drives_padir_infer(models, tmp_path):
  """A run's config.gin is enough for padir infer: no network or length flags."""
  src = tmp_path / 'src.txt'
  src.write_text('abc\ncba\n', encoding='utf-8')
  model_dir = models['padir']
  code = infer.main([f'--gin_file={os.path.join(model_dir, "config.gin")}',
                     '--gin_file=gin/runs/infer.gin', f"--gin.CHECKPOINT_PATH='{model_dir}'",
                     f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'out'}'",
                     f"--gin.INFER_INPUT_FILE='{src}'", '--gin.INFER_BATCH_SIZE=8'])
  assert code == 0
  rows = (tmp_path / 'out' / 'src-4.tsv').read_text(encoding='utf-8').splitlines()
  model = padir.load(model_dir)
  assert [r.split('\t')[1] for r in rows[1:]] == model.translate(['abc', 'cba'])
