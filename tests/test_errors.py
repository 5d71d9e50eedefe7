"""Tests of padir.errors: every command prints one or two lines for a user mistake."""

import os
import sys

import pytest

from padir import cli
from padir import errors
from padir import train

import train_testlib


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
  # setenv (not delenv) so that the variable a --debug test sets is removed afterwards.
  monkeypatch.setenv(errors.DEBUG_ENV, '')


def _train_flags(tmp_path, *extra):
  return train_testlib.train_flags('/nonexistent/data', str(tmp_path / 'run'), 2,
                                   extra=list(extra))


MISTAKES = {
    'not_a_value': (['--gin.TRAIN_STEPS=abc'], 'abc is not a value'),
    'unquoted_string': (['--gin.MODEL_DIR=/tmp/x'], 'strings need inner quotes'),
    'unbalanced_dict': (["--gin.TASK_FEATURE_LENGTHS={'inputs': 8"], 'unbalanced brackets'),
    'missing_module': (['--gin_bindings=import padir_no_such_module'],
                       "No module named 'padir_no_such_module'"),
    'unbound_argument': (['--gin.OPTIMIZER=@padir.optimizers.adamw()'],
                         'padir.optimizers.adamw (used by OPTIMIZER) needs learning_rate: bind '
                         'it in a gin file or with --gin.padir.optimizers.adamw.learning_rate='),
    'macro_typo': (['--gin.TRAIN_STEP=2'],
                   '--gin.TRAIN_STEP is never used: no gin file refers to %TRAIN_STEP (did you '
                   'mean TRAIN_STEPS'),
    'scope_typo': (['--gin.trian/padir.datasets.DatasetConfig.batch_size=2'],
                   "the scope 'trian' is never used (did you mean train?)"),
    'configurable_typo': (['--gin.padir.trian.train.total_steps=2'],
                          "No configurable matching 'padir.trian.train' (did you mean "
                          'padir.train.train?)'),
    'parameter_typo': (['--gin.padir.train.train.total_step=2'],
                       "doesn't have a parameter named 'total_step' (did you mean total_steps"),
}


@pytest.mark.parametrize('name', sorted(MISTAKES))
def test_user_mistakes_print_one_line(name, tmp_path, capsys):
  extra, expected = MISTAKES[name]
  assert train.main(_train_flags(tmp_path, *extra)) == 1
  err = capsys.readouterr().err
  assert err.startswith('padir train: ') and expected in err, err
  assert len(err.strip().splitlines()) <= 2, err
  assert not (tmp_path / 'run').exists()  # refused before anything was written


def test_model_dir_that_is_a_file_or_unwritable(tmp_path, capsys, monkeypatch):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  assert train.main(_train_flags(tmp_path, f"--gin.MODEL_DIR='{a_file}/run'")) == 1
  err = capsys.readouterr().err
  assert err == (f'padir train: Not a directory: {a_file}/run (a file is in the way where a '
                 'directory is needed: choose another path).\n')

  def read_only(path, *args, **kwargs):
    raise PermissionError(13, 'Permission denied', path)

  monkeypatch.setattr(os, 'makedirs', read_only)
  assert train.main(_train_flags(tmp_path)) == 1
  err = capsys.readouterr().err
  assert err.startswith('padir train: Permission denied: ') and 'choose a writable' in err
  assert len(err.splitlines()) == 1


def test_debug_flag_and_variable_show_the_traceback(tmp_path, capsys):
  with pytest.raises(ValueError, match='strings need inner quotes'):
    train.main(_train_flags(tmp_path, '--gin.MODEL_DIR=/tmp/x', '--debug'))
  assert os.environ[errors.DEBUG_ENV] == '1'
  with pytest.raises(TypeError, match='learning_rate'):  # the variable alone does it too
    train.main(_train_flags(tmp_path, '--gin.OPTIMIZER=@padir.optimizers.adamw()'))


def test_console_script_reports_mistakes_of_every_command(tmp_path, capsys, monkeypatch):
  assert cli.main(['train', *_train_flags(tmp_path, '--gin.TRAIN_STEP=2')]) == 1
  assert len(capsys.readouterr().err.strip().splitlines()) == 1
  # A command's main that lets a user mistake escape: the console script still prints one line.
  from padir import analysis  # pylint: disable=g-import-not-at-top

  def escapes(argv):
    raise FileNotFoundError(2, 'No such file or directory', argv[0])

  monkeypatch.setattr(analysis, 'main', escapes)
  code = cli.main(['analyze', str(tmp_path / 'missing.npz')])
  err = capsys.readouterr().err
  assert code == 1 and err == (f'padir analyze: No such file or directory: {tmp_path}/missing.npz '
                               '(check the path).\n')


def test_ctrl_c_and_bugs():
  def interrupted():
    raise KeyboardInterrupt

  assert errors.call(interrupted, 'padir x') == errors.EXIT_INTERRUPTED

  def bug():
    raise KeyError('a bug keeps its traceback')

  with pytest.raises(KeyError):
    errors.call(bug, 'padir x')
  assert errors.describe(RuntimeError('x')) is None
  assert errors.pop_debug_flag(['a', '--debug', 'b']) == ['a', 'b']
