"""Tests of padir.gin_utils and the shipped gin files."""

import pathlib

import gin
import pytest

from padir import ar_decoding
from padir import builders  # pylint: disable=unused-import
from padir import datasets
from padir import distill  # pylint: disable=unused-import
from padir import eval as eval_lib  # pylint: disable=unused-import
from padir import gin_utils
from padir import infer  # pylint: disable=unused-import
from padir import train


def test_split_gin_args_rewrites_dot_flags():
  args = gin_utils.split_gin_args([
      '--gin_file=a.gin', '--gin_file', 'b.gin', "--gin.MODEL_DIR='/x'",
      '--gin.padir.builders.network_config.emb_dim=32', '--gin_bindings=X = 1',
      '--gin_search_paths=/s1,/s2', '--process_id=1'])
  assert args.gin_files == ['a.gin', 'b.gin']
  assert args.gin_bindings == ["MODEL_DIR = '/x'", 'padir.builders.network_config.emb_dim = 32',
                               'X = 1']
  assert args.gin_search_paths == ['/s1', '/s2']
  assert args.rest == ['--process_id=1']
  with pytest.raises(gin_utils.GinFlagError, match='--gin.NAME=VALUE'):
    gin_utils.split_gin_args(['--gin.MODEL_DIR'])


def test_resolve_gin_file_from_the_package():
  by_package = gin_utils.resolve_gin_file('gin/models/tiny.gin')
  by_gin_dir = gin_utils.resolve_gin_file('models/tiny')
  assert pathlib.Path(by_package).samefile(by_gin_dir)
  with pytest.raises(gin_utils.GinFlagError, match='Shipped gin files: .*runs/train.gin'):
    gin_utils.resolve_gin_file('models/nope.gin')


def test_missing_required_macros_are_listed_together():
  with pytest.raises(ValueError) as err:
    gin_utils.parse_gin(['models/tiny.gin', 'objectives/padir.gin', 'runs/train.gin'],
                        ["MODEL_DIR = '/tmp/x'"])
  text = str(err.value)
  assert '4 required gin value(s) not set' in text
  for name in ('TRAIN_STEPS', 'MIXTURE_OR_TASK_NAME', 'TASK_FEATURE_LENGTHS', 'VOCABULARY'):
    assert name in text
  assert 'MODEL_DIR ' not in text
  assert '--gin.TRAIN_STEPS=1000' in text


def test_train_main_reports_missing_macros(capsys):
  code = train.main(['--gin_file=gin/experiments/wmt14_ende_padir.gin'])
  assert code == 1
  err = capsys.readouterr().err
  assert 'MODEL_DIR' in err and 'VOCABULARY' in err and '--gin.MODEL_DIR=' in err
  assert '--gin.INIT_FROM="\'/data/t5-v1_1-base\'"' in err  # the recipe starts from T5


def _run_files(path: pathlib.Path) -> set[str]:
  """The runs/*.gin files an experiment includes, directly or through other experiments."""
  runs = set()
  for line in path.read_text().splitlines():
    if line.startswith('include '):
      name = line.split(None, 1)[1].strip().strip('\'"')
      if name.startswith('runs/') or '/runs/' in name:
        runs.add(name.rsplit('/', 1)[1])
      else:
        runs |= _run_files(pathlib.Path(gin_utils.resolve_gin_file(name)))
  return runs


_EXPERIMENTS = sorted((gin_utils.GIN_DIR / 'experiments').glob('*.gin'))
# Training experiments (those built on runs/train.gin only); distillation experiments add
# runs/distill.gin on top of a teacher's training experiment.
TRAIN_EXPERIMENTS = [p.name for p in _EXPERIMENTS if _run_files(p) == {'train.gin'}]
DISTILL_EXPERIMENTS = [p.name for p in _EXPERIMENTS if 'distill.gin' in _run_files(p)]


def test_training_experiments_are_shipped():
  assert {'bible_es_en_padir.gin', 'bible_es_en_ar.gin', 'bible_es_en_padir_tiny.gin',
          'wmt14_ende_padir.gin', 'wmt14_ende_ar.gin', 'wmt16_enro_padir.gin',
          'wmt16_enro_ar.gin', 'wmt14_ende_padir_distilled.gin',
          'wmt16_enro_padir_distilled.gin'} <= set(TRAIN_EXPERIMENTS)
  assert {'wmt14_ende_distill.gin', 'wmt16_enro_distill.gin'} <= set(DISTILL_EXPERIMENTS)


@pytest.mark.parametrize('experiment', TRAIN_EXPERIMENTS)
def test_shipped_experiments_parse(experiment, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # includes resolve from the package, not the working directory
  bindings = ["MODEL_DIR = '/tmp/x'", "VOCABULARY = 'byte'", "DISTILLED_DATA = '/tmp/d'",
              'INIT_FROM = None']
  gin_utils.parse_gin([f'experiments/{experiment}'], bindings)
  assert gin.query_parameter('TRAIN_STEPS/macro.value') > 0
  for run in ('eval', 'infer'):
    gin_utils.parse_gin([f'experiments/{experiment}', f'runs/{run}.gin'],
                        bindings + ["CHECKPOINT_PATH = '/tmp/x'", "INFER_OUTPUT_DIR = '/tmp/y'"])
  gin.clear_config()


@pytest.mark.parametrize('pair', ['wmt14_ende', 'wmt16_enro'])
def test_distilled_students_train_on_distilled_data(pair, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  experiment = f'experiments/{pair}_padir_distilled.gin'
  bindings = ["MODEL_DIR = '/tmp/x'", "VOCABULARY = 'byte'", "INIT_FROM = '/data/t5-v1_1-base'"]
  with pytest.raises(ValueError, match='DISTILLED_DATA'):
    gin_utils.parse_gin([experiment], bindings)
  gin_utils.parse_gin([experiment], bindings + ["DISTILLED_DATA = '/data/distilled/arrays'"])
  for scope in ('train', 'train_eval', 'infer_eval'):
    with gin.config_scope(scope):
      assert datasets.DatasetConfig().source == '/data/distilled/arrays'
  # The rest is the raw-data PaDIR experiment (two unrolled stages, base size).
  assert gin.query_parameter('padir.models.PadirModel.num_train_stages') == 2
  assert gin.query_parameter('padir.builders.network_config.size') == 'base'
  from padir import checkpoints  # pylint: disable=g-import-not-at-top
  assert checkpoints.CheckpointConfig().init_from == '/data/t5-v1_1-base'  # pretrained start
  gin.clear_config()


@pytest.mark.parametrize('experiment', DISTILL_EXPERIMENTS)
def test_distill_experiments_parse(experiment, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  bindings = ["VOCABULARY = 'byte'", "CHECKPOINT_PATH = '/runs/teacher'",
              "DISTILL_OUTPUT_DIR = '/data/out'", "MIXTURE_OR_TASK_NAME = '/data/arrays'",
              'DISTILL_NO_REPEAT_NGRAM = 4']
  if experiment.startswith('wmt'):
    with pytest.raises(ValueError, match='TASK_MODULE'):
      gin_utils.parse_gin([f'experiments/{experiment}'], bindings)
    bindings.append("TASK_MODULE = 'my_tasks'")
  gin_utils.parse_gin([f'experiments/{experiment}'], bindings)
  with gin.config_scope('distill'):
    cfg = datasets.DatasetConfig()
  assert (cfg.source, cfg.split, cfg.shuffle) == ('/data/arrays', 'train', False)
  teacher = gin.get_configurable('padir.distill.default_teacher_decoding')()
  assert isinstance(teacher, ar_decoding.ARConfig)
  assert (teacher.method, teacher.beam_size, teacher.no_repeat_ngram) == ('beam', 4, 4)
  if experiment.startswith('wmt'):
    assert cfg.module == 'my_tasks'
    assert teacher.length_penalty == 0.6
  gin.clear_config()


def test_network_config_validates_fields():
  assert builders.network_config('small', dropout_rate=0.2) == {
      'size': 'small', 'overrides': {'dropout_rate': 0.2}}
  with pytest.raises(ValueError, match="unknown T5Config field.*'emb_size'"):
    builders.network_config(emb_size=3)
  with pytest.raises(ValueError, match='derived from the vocabulary'):
    builders.network_config(length_id=3)


def test_unused_bindings_are_errors_with_the_closest_names():
  files = ['models/tiny.gin', 'objectives/padir.gin', 'runs/train.gin']
  required = ["MODEL_DIR = '/tmp/x'", 'TRAIN_STEPS = 2', "MIXTURE_OR_TASK_NAME = 'x'",
              "VOCABULARY = 'byte'", "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}"]
  with pytest.raises(gin_utils.GinFlagError,
                     match=r'--gin.TRAIN_STEP is never used.*did you mean TRAIN_STEPS'):
    gin_utils.parse_gin(files, required + ['TRAIN_STEP = 2'])
  with pytest.raises(gin_utils.GinFlagError, match=r"scope 'infer_evl'.*did you mean infer_eval"):
    gin_utils.parse_gin(files, required + ['infer_evl/padir.datasets.DatasetConfig.split = "x"'])
  # A macro only another shipped command uses passes a per-stage parse, not a strict one.
  gin_utils.parse_gin(files, required + ["CHECKPOINT_PATH = '/tmp/y'"])
  with pytest.raises(gin_utils.GinFlagError, match='CHECKPOINT_PATH is never used'):
    gin_utils.parse_gin(files, required + ["CHECKPOINT_PATH = '/tmp/y'"], strict_bindings=True)
  gin.clear_config()


@pytest.mark.parametrize('command', ['eval', 'infer'])
def test_eval_and_infer_refuse_a_misspelled_macro(command, capsys):
  import train_testlib  # pylint: disable=g-import-not-at-top
  main = {'eval': eval_lib.main, 'infer': infer.main}[command]
  flags = train_testlib.run_flags(command, '/tmp/data', [
      "--gin.CHECKPOINT_PATH='/tmp/ckpt'", "--gin.EVAL_OUTPUT_DIR='/tmp/out'",
      "--gin.INFER_OUTPUT_DIR='/tmp/out'", "--gin.CHECKPONT_PATH='/tmp/typo'"])
  flags = [f for f in flags if not (command == 'eval' and 'INFER_OUTPUT_DIR' in f)
           and not (command == 'infer' and 'EVAL_OUTPUT_DIR' in f)]
  assert main(flags) == 1
  err = capsys.readouterr().err
  assert '--gin.CHECKPONT_PATH is never used' in err and 'CHECKPOINT_PATH' in err


def test_shipped_gin_layout_and_wheel_copy(tmp_path, monkeypatch):
  """One copy in the top-level gin/ (no __init__.py: it must not shadow gin-config); a wheel's
  copy under padir/_shipped/gin resolves the same names."""
  repo_gin = pathlib.Path(gin_utils.PACKAGE_DIR).parent / 'gin'
  assert gin_utils.GIN_DIR == repo_gin
  assert sorted(p.name for p in repo_gin.iterdir() if p.is_dir()) == [
      'experiments', 'models', 'objectives', 'runs']
  assert not list(repo_gin.rglob('*.py'))
  assert gin.__file__ and 'site-packages' in gin.__file__  # gin-config, not the folder
  for name in ('gin/models/small.gin', 'models/small.gin', 'padir/gin/models/small.gin'):
    resolved = pathlib.Path(gin_utils.resolve_gin_file(name)).resolve()
    assert resolved == repo_gin / 'models' / 'small.gin'
  import shutil  # pylint: disable=g-import-not-at-top
  wheel_pkg = tmp_path / 'site' / 'padir'
  shutil.copytree(repo_gin, wheel_pkg / '_shipped' / 'gin')
  monkeypatch.setattr(gin_utils, 'PACKAGE_DIR', wheel_pkg)
  found = gin_utils._find_gin_dir()  # pylint: disable=protected-access
  assert found == wheel_pkg / '_shipped' / 'gin'
  monkeypatch.setattr(gin_utils, 'GIN_DIR', found)
  monkeypatch.chdir(tmp_path)
  assert gin_utils.resolve_gin_file('gin/runs/train.gin') == str(found / 'runs' / 'train.gin')
  gin_utils.parse_gin(['gin/experiments/bible_es_en_padir_tiny.gin'],
                      ["MODEL_DIR = '/tmp/x'", "TRAIN_STEPS = 1"], required=False)
  shutil.rmtree(wheel_pkg / '_shipped')
  with pytest.raises(ImportError, match='without its gin files'):
    gin_utils._find_gin_dir()  # pylint: disable=protected-access


def test_any_shipped_or_saved_config_parses_in_a_fresh_process(tmp_path):
  """The quickstart's gin (and a config.gin that names its configurables) parses without
  importing padir.quickstart first: every command imports all configurables."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys; from padir import gin_utils; '
          "gin_utils.parse_gin(['experiments/bible_es_en_padir.gin', 'runs/quickstart.gin'], "
          "[\"MODEL_DIR = '/tmp/x'\", 'TRAIN_STEPS = 1'], required=False); "
          "assert 'padir.quickstart' in sys.modules")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       cwd=tmp_path, check=False, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]


def test_includes_resolve_without_error_lines(tmp_path, monkeypatch, caplog):
  """gin logs 'Path not found' at ERROR for each search path an include is not under; padir
  drops those probes (they alarm users), while a missing file still fails."""
  monkeypatch.chdir(tmp_path)
  with caplog.at_level('INFO'):
    gin_utils.parse_gin(['gin/experiments/bible_es_en_padir.gin'],
                        ["MODEL_DIR = '/tmp/x'", 'TRAIN_STEPS = 1'], required=False)
  assert not [r for r in caplog.records if 'Path not found' in r.getMessage()]
  (tmp_path / 'mine.gin').write_text("include 'models/nope.gin'\n")
  with pytest.raises(IOError):
    gin_utils.parse_gin([str(tmp_path / 'mine.gin')], required=False)
