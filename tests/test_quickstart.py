"""End-to-end test of padir quickstart: every stage on a tiny slice of the Bible corpus, then
a rerun that skips the finished stages, a resumed stage, and a refused configuration change."""

import dataclasses
import json
import os

import gin
import jax
import pytest

from padir import quickstart
from padir import workers
from padir.data import corpus
from padir.data import tasks
from padir.data import vocab

TASK = 'quickstart_test_tiny'
LENGTH = 16
# The teacher trains in two legs (STUDENT_START_STEPS), so no ar_matched stage runs.
STAGE_FILES = [f'{s}.json' for s in quickstart.STAGES if s not in ('report', 'ar_matched')]


def _register_tiny_task(root):
  """Short verses of the embedded corpus as a TSV task with both English references."""
  tok = vocab.load_tokenizer('bible')
  paths = {}
  for split, n in (('train', 48), ('validation', 8), ('test', 16)):
    rows = corpus.read_bible(split)
    picked = [i for i in range(len(rows['es']))
              if max(len(tok.encode(rows[c][i])) for c in ('es', 'en', 'en_kjv')) < LENGTH][:n]
    paths[split] = os.path.join(root, f'{split}.tsv')
    corpus.write_tsv(paths[split], ('es', 'en', 'en_kjv'),
                     [(rows['es'][i], rows['en'][i], rows['en_kjv'][i]) for i in picked])
  tasks.register_tsv_task(TASK, **paths, source_column='es', target_column='en',
                          reference_columns=['en', 'en_kjv'], vocabulary='bible')


FLAGS = [
    f"--gin.padir.quickstart.QuickstartConfig.task='{TASK}'",
    f'--gin.MAX_LENGTH={LENGTH}',
    '--gin.TEACHER_STEPS=4', '--gin.STUDENT_START_STEPS=2', '--gin.STUDENT_STEPS=2',
    '--gin.STUDENT_TRAIN_EXAMPLES=24',
    '--gin.BATCH_SIZE=8', '--gin.EVAL_BATCH_SIZE=8', '--gin.EVAL_STEPS=1',
    '--gin.CHECKPOINT_PERIOD=2', '--gin.LOG_PERIOD=1',
    '--gin.padir.builders.network_config.emb_dim=32',
    '--gin.padir.builders.network_config.num_heads=2',
    '--gin.padir.builders.network_config.head_dim=16',
    '--gin.padir.builders.network_config.mlp_dim=64',
    '--gin.padir.builders.network_config.num_encoder_layers=1',
    '--gin.padir.builders.network_config.num_decoder_layers=1',
    '--gin.padir.quickstart.QuickstartConfig.distill_batch_size=8',
    '--gin.padir.quickstart.QuickstartConfig.distill_choices=((2, 0.6), (1, 0.0))',
    # An untrained teacher writes long outputs: truncate them rather than drop the rows.
    "--gin.padir.quickstart.QuickstartConfig.overlong='truncate'",
    ('--gin.padir.quickstart.QuickstartConfig.extra_ablations='
     '{"slot_head": ("padir.builders.network_config.length_head = \'slot\'",)}'),
    # The students train at two thirds of the teacher's rate; each leg of the teacher and the
    # students have their own cooldown.
    '--gin.COOLDOWN_STEPS=3',
    ('--gin.padir.quickstart.QuickstartConfig.stage_bindings='
     '{"students": ("padir.optimizers.rsqrt_schedule.base_learning_rate = 2.0", '
     '"COOLDOWN_STEPS = 1"), "teacher_start": ("COOLDOWN_STEPS = 2",)}'),
    '--gin.padir.quickstart.QuickstartConfig.select_iterations=(1, 2)',
    '--gin.padir.quickstart.QuickstartConfig.select_length_beams=(3,)',
    '--gin.padir.quickstart.QuickstartConfig.select_rerank=(False, True)',
    '--gin.padir.quickstart.QuickstartConfig.select_prune=(0, 1)',
    '--gin.padir.quickstart.QuickstartConfig.eval_batch_size=8',
    '--gin.padir.quickstart.QuickstartConfig.eval_beam_size=0',
    '--gin.padir.quickstart.QuickstartConfig.iterations=(1, 2)',
    '--gin.padir.quickstart.QuickstartConfig.bench_examples=2',
    "--gin.padir.quickstart.QuickstartConfig.small_preset='tiny'",
    '--gin.padir.quickstart.QuickstartConfig.small_iterations=(2,)',
    '--gin.padir.quickstart.QuickstartConfig.small_bench_examples=1',
    '--no_progress',
]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('quickstart'))
  _register_tiny_task(root)
  out = os.path.join(root, 'run')
  code = quickstart.main(FLAGS + [f'--output_dir={out}'])
  yield out, code
  gin.clear_config()


def _stage_files(out):
  """The stage markers (stages/ablations/ holds one marker per extra ablation student)."""
  return sorted(f for f in os.listdir(os.path.join(out, 'stages')) if f.endswith('.json'))


def _load(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _main_and_other(results):
  """Short names of the main student (chosen on validation) and of the other data student."""
  main = results['main_student'][len('student_'):]
  return main, {'distilled': 'raw', 'raw': 'distilled'}[main]


def test_every_stage_runs_and_the_report_has_its_fields(run):
  out, code = run
  assert code == 0
  assert _stage_files(out) == sorted(STAGE_FILES)
  results = _load(os.path.join(out, 'report', 'report.json'))
  names = [s['name'] for s in results['systems']]
  chosen = results['selection']['chosen']['iterations']
  main, other = _main_and_other(results)
  assert names == ['ar_greedy', f'padir_{main}_t1', f'padir_{main}_t2',
                   f'padir_{other}_t{chosen}', f'padir_scratch_t{chosen}']
  assert results['headline_iterations'] == chosen
  assert ("weights at step 2 of 4, so it has trained 4 steps against the teacher's 4: the "
          'teacher (which distills and re-ranks) is the AR baseline at equal training.'
          ) in results['summary']
  # The run kept its compiled programs in its own cache and gave the process's setting back.
  assert os.listdir(os.path.join(out, quickstart.CACHE_DIR))
  assert jax.config.jax_compilation_cache_dir is None
  # Validation choice: the grid (1 pass once, 2 passes; length beam 3 with and without
  # re-ranking, or pruned after pass 1) for each of the two students that differ in their
  # training data.
  selection = results['selection']
  assert len(selection['candidates']) == 10 and selection['validation_examples'] == 8
  assert sum(c['setting']['prune'] == 1 for c in selection['candidates']) == 2
  assert {c['student'] for c in selection['candidates']} == {'student_distilled',
                                                             'student_raw'}
  chosen_row = [c for c in selection['candidates'] if c['name'] == selection['chosen_name']]
  assert [c['student'] for c in chosen_row] == [selection['student']]
  # The scratch student trains on the data of the student chosen on validation.
  stage_data = {s: _load(os.path.join(out, 'stages', f'{s}.json'))['result']['data']
                for s in ('student_distilled', 'student_raw', 'student_scratch')}
  assert stage_data['student_scratch'] == stage_data[selection['student']]
  labels = [a['label'] for a in selection['ablations']]
  assert labels[0].startswith('chosen:')
  assert {'distilled': 'no distillation: trained on the human references',
          'raw': "distillation: trained on the teacher's outputs instead of the references"
          }[main] in labels
  assert 'no teacher initialisation (random weights)' in labels
  assert any(label.startswith('teacher re-ranking') for label in labels)
  # The default grid avoids repeats in each pass (quickstart.gin); the ablation undoes it.
  assert all(c['setting']['avoid_repeats'] for c in selection['candidates'])
  assert 'repeats not avoided in each pass' in labels
  # Where the teacher re-ranks it also fixes tokens (quickstart.gin); the ablation undoes it.
  assert all(c['setting']['teacher_fix'] == (0.7 if c['setting']['rerank'] else 0.0)
             for c in selection['candidates'])
  assert all(c['setting']['teacher_fix_rounds'] == (2 if c['setting']['teacher_fix'] else 1)
             for c in selection['candidates'])
  assert any(c['setting']['rerank'] for c in selection['candidates'])
  assert ('the teacher fixes no token (re-ranking only)' in labels) == bool(
      selection['chosen']['teacher_fix'])
  assert "slot_head: padir.builders.network_config.length_head = 'slot'" in labels
  slot = _load(os.path.join(out, 'stages', 'student_ablations.json'))['result']
  assert slot['student_slot_head']['step'] == 2
  distillation = results['distillation']
  assert [c['name'] for c in distillation['candidates']] == ['beam2_lp0.6', 'greedy']
  assert distillation['chosen'] in ('greedy', 'beam2_lp0.6')
  assert distillation['length_ratio'] > 0
  models = results['setup']['models']
  # The students start where the teacher's first leg ended; the teacher trained on from there.
  assert models['student_distilled']['initialised from'] == 'teacher_start'
  assert models['student_raw']['initialised from'] == 'teacher_start'
  assert models['student_scratch']['initialised from'] == 'random weights'
  assert 'ar_matched' not in models
  # Each model's cooldown is the one its stage bound (stage_bindings).
  assert models['teacher']['learning-rate cooldown'] == (
      'linear to 0 over the last 3 steps (first leg: 2 steps)')
  for stage in ('student_distilled', 'student_raw', 'student_scratch'):
    assert models[stage]['learning-rate cooldown'] == 'linear to 0 over the last 1 step'
  teacher_stage = _load(os.path.join(out, 'stages', 'teacher.json'))['result']
  assert teacher_stage['legs']['teacher_start']['step'] == 2
  assert teacher_stage['legs']['teacher']['step'] == 2
  assert teacher_stage['init_from'] is None
  assert os.path.isdir(os.path.join(out, 'teacher_start'))
  assert results['setup']['student initialisation'].startswith(
      'the AR teacher at step 2 of 4 (the end of its first leg)')
  for system in results['systems']:
    for key in ('bleu', 'chrf', 'repetition_rate', 'mean_length_error', 'num_examples'):
      assert isinstance(system[key], (int, float)), (system['name'], key)
    assert system['num_examples'] == 16
    assert system['latency_ms']['median'] > 0
  assert set(results['targets']) == {'padir_vs_teacher', 'padir_faster', 'distillation_helps',
                                     'repetition_falls'}
  assert all(t['met'] in (True, False) for t in results['targets'].values())
  assert [r['iteration'] for r in results['per_iteration'][f'student_{main}']] == [1, 2]
  small = results['latency_small']
  assert small['config'] == 'tiny' and [s['name'] for s in small['systems']] == [
      'ar_greedy', 'padir_t2']
  assert results['setup']['data']['train subset (students)'] == 24
  # The set-up names the decoding the report's PaDIR rows used: the validation choice.
  used = results['setup']['PaDIR decoding (the validation choice applied to the gin RefineConfig)']
  assert used['remask']['rule'] == selection['chosen']['rule']
  assert used['num_iterations'] == selection['chosen']['iterations']
  assert used['length_beam'] == selection['chosen']['length_beam']
  assert used['teacher_reranks'] == selection['chosen']['rerank']
  assert results['setup']['models']['teacher']['steps'] == 4  # both legs
  assert all(m['peak learning rate'] > 0 for m in models.values())  # from metrics.jsonl
  # stage_bindings['students'] reached every student stage and no AR one.
  teacher_rate = models['teacher']['peak learning rate']
  for stage in ('student_distilled', 'student_raw', 'student_scratch'):
    assert models[stage]['peak learning rate'] == pytest.approx(teacher_rate * 2 / 3, rel=1e-2)
  # Every stage records its compilation; the student stages after the first one load the
  # programs the first compiled from the run's persistent cache. With two cores or more the
  # reference-trained student trains alongside the teacher's second leg (the first student),
  # the scratch one alongside the distilled one.
  markers = {s: _load(os.path.join(out, 'stages', f'{s}.json'))
             for s in ('teacher', 'student_distilled', 'student_raw', 'student_scratch',
                       'select')}
  compiling = {s: m['compile'] for s, m in markers.items()}
  assert all(c['programs'] > 0 and c['seconds'] > 0 for c in compiling.values())
  together = workers.cpu_shares(2) is not None
  assert compiling['student_distilled' if together else 'student_raw']['cache_hits'] > 0
  alongside = {s: m['concurrent_with'] for s, m in markers.items() if 'concurrent_with' in m}
  # The scratch student trained alongside learnt from the distilled data; when validation chose
  # the reference-trained student instead, it was set aside and trained again on its own.
  expected = {'student_raw': 'teacher', 'student_scratch': 'student_distilled'}
  if main == 'raw':
    del expected['student_scratch']
  assert alongside == (expected if together else {})
  assert os.path.isdir(os.path.join(out, 'student_scratch_on_distilled')) == (
      together and main == 'raw')
  stage_seconds = results['setup']['stage seconds']
  assert results['setup']['total seconds (every stage but the report)'] == pytest.approx(
      sum(v for k, v in stage_seconds.items() if k not in alongside), abs=0.2)
  assert results['setup']['total compiling seconds'] > 0
  # ... and how fast the machine was just before it.
  speed = results['setup']['machine speed before each stage (2048 x 2048 float32 matmul, GFLOP/s)']
  assert set(speed) == {f[:-len('.json')] for f in STAGE_FILES}
  assert all(v > 0 for v in speed.values())
  md = open(os.path.join(out, 'report', 'report.md'), encoding='utf-8').read()
  assert '## Targets' in md and f'PaDIR {main}, 2 it.' in md
  assert '## Validation: choosing the PaDIR decoding' in md and '## Ablations (validation)' in md
  assert '## Distillation' in md
  assert os.path.getsize(os.path.join(out, 'report', 'report.png')) > 0
  # The students trained on what the stages produced: the distilled export and the subset.
  distilled = _load(os.path.join(out, 'distill', 'distill.json'))
  assert distilled['num_rows'] + distilled['num_empty'] == 24
  assert distilled['choice']['chosen'] == distillation['chosen']
  assert distilled['length_ratio'] == pytest.approx(distillation['length_ratio'])
  assert os.path.isfile(os.path.join(out, 'eval', 'decodes', f'padir_{main}_t2.npz'))


def test_its_models_translate_with_the_chosen_decoding(run):
  """The report names a translate command per model; padir translate and padir.load work on
  the teacher and the students with no other flag, the student with the validation choice."""
  import io  # pylint: disable=g-import-not-at-top
  import padir  # pylint: disable=g-import-not-at-top
  from padir import translate  # pylint: disable=g-import-not-at-top
  out, _ = run
  md = open(os.path.join(out, 'report', 'report.md'), encoding='utf-8').read()
  assert '## Translate with these models' in md
  chosen = _load(os.path.join(out, 'stages', 'select.json'))['result']['chosen']
  for stage in ('student_distilled', 'student_raw'):  # either translates as chosen
    saved = _load(os.path.join(out, stage, 'decoding.json'))
    assert saved['num_iterations'] == chosen['iterations']
    assert saved['length_beam'] == chosen['length_beam']
    assert ('rerank_model_dir' in saved) == chosen['rerank']
    assert saved.get('prune_after', 0) == chosen['prune']
    assert saved.get('avoid_repeats', False) == chosen['avoid_repeats']
    assert saved.get('teacher_fix_threshold', 0.0) == chosen['teacher_fix']
    assert saved.get('teacher_fix_rounds', 1) == chosen['teacher_fix_rounds']
  for stage in ('teacher', 'student_distilled', 'student_raw'):
    model_dir = os.path.join(out, stage)
    assert f'--model_dir={model_dir}' in md
    stdout = io.StringIO()
    assert translate.run([f'--model_dir={model_dir}'], stdin=io.StringIO('En el principio\n'),
                         stdout=stdout) == 0
    model = padir.load(model_dir)
    # The CLI writes one line per input: whitespace runs (and any newline) become one space.
    assert stdout.getvalue() == ' '.join(model.translate('En el principio').split()) + '\n'
    if stage != 'teacher':
      assert model.decode_config.num_iterations == chosen['iterations']
      assert model.decode_config.length_beam == chosen['length_beam']
      assert (model.reranker is not None) == chosen['rerank']
      assert model.decode_config.prune_after == chosen['prune']


def test_rerun_skips_finished_stages_and_resumes_a_missing_one(run, capsys):
  out, _ = run
  capsys.readouterr()
  # A stage that died after training but before its marker, and one missing evaluation.
  chosen = _load(os.path.join(out, 'stages', 'select.json'))['result']['chosen']['iterations']
  main, other = _main_and_other(_load(os.path.join(out, 'report', 'report.json')))
  os.remove(os.path.join(out, 'stages', 'student_raw.json'))
  os.remove(os.path.join(out, 'stages', 'evaluate.json'))
  os.remove(os.path.join(out, 'eval', f'padir_{other}_t{chosen}.json'))
  before = os.path.getmtime(os.path.join(out, 'eval', f'padir_{main}_t1.json'))
  assert quickstart.main(FLAGS + [f'--output_dir={out}']) == 0
  printed = capsys.readouterr().out
  for stage in ('data', 'teacher', 'distill', 'student_distilled', 'benchmark'):
    assert f'{stage}: done' in printed and 'skipped' in printed
  assert 'already at step 2' in printed  # student_raw resumed from its checkpoint
  assert f'PaDIR {other}, {chosen} it.' in printed and f'PaDIR {main}, 1 it.' not in printed
  assert os.path.getmtime(os.path.join(out, 'eval', f'padir_{main}_t1.json')) == before
  assert _stage_files(out) == sorted(STAGE_FILES)


def test_changed_configuration_is_refused(run, capsys):
  out, _ = run
  flags = [f for f in FLAGS if not f.startswith('--gin.TEACHER_STEPS')]
  assert quickstart.main(flags + ['--gin.TEACHER_STEPS=3', f'--output_dir={out}']) == 1
  err = capsys.readouterr().err
  assert 'another configuration' in err and 'teacher_steps' in err
  assert quickstart.main(FLAGS + ['--stages=data,nope', f'--output_dir={out}']) == 2
  assert "unknown stage(s) ['nope']" in capsys.readouterr().err


def test_canvas_mismatch_is_a_clear_error(run, capsys):
  out, _ = run
  flags = FLAGS + ["--gin.padir.refine_decoding.RefineConfig.canvas_init='mask'",
                   f'--output_dir={out}_mismatch', '--stages=student_distilled']
  assert quickstart.main(flags) == 1
  err = capsys.readouterr().err
  assert "trained on 'mask_range' canvases" in err and "from 'mask' canvases" in err


def test_ablation_students_train_on_the_data_chosen_on_validation(tmp_path):
  config = quickstart.QuickstartConfig()
  run = quickstart.Quickstart(config, str(tmp_path), [], [], progress=False)
  with pytest.raises(ValueError, match='run the select stage first'):
    run._stage_student_scratch()  # pylint: disable=protected-access
  assert run.main_student() == 'student_distilled'
  os.makedirs(run.path('stages'))
  for student in ('student_raw', 'student_distilled'):
    quickstart.qs_eval.write_json(run.path('stages', 'select.json'),
                                  {'seconds': 1.0, 'result': {'student': student}})
    assert run.main_student() == student
    assert run.student_data('student_scratch') == run.student_data(student)
    assert run.student_data('student_raw') == run.subset_data
    assert run.student_data('student_distilled') == run.distilled_data
  fixed = quickstart.Quickstart(dataclasses.replace(config, choose_data=False), str(tmp_path),
                                [], [], progress=False)
  quickstart.qs_eval.write_json(run.path('stages', 'select.json'),
                                {'seconds': 1.0, 'result': {'student': 'student_raw'}})
  assert fixed.main_student() == 'student_distilled'
  assert fixed.student_data('student_scratch') == fixed.distilled_data


def test_a_scratch_student_on_data_the_select_stage_did_not_choose_is_retrained(tmp_path):
  run = quickstart.Quickstart(quickstart.QuickstartConfig(), str(tmp_path), [], [],
                              progress=False, print_fn=lambda line: None)
  os.makedirs(run.path('stages'))
  os.makedirs(run.path('student_scratch', '4'))
  # Trained alongside the distilled student, on the distilled data, in another directory.
  scratch = {'seconds': 1.0, 'concurrent_with': 'student_distilled',
             'result': {'data': os.path.join('/elsewhere', 'distill', 'arrays')}}
  quickstart.qs_eval.write_json(run.path('stages', 'student_scratch.json'), scratch)
  select = run.path('stages', 'select.json')
  quickstart.qs_eval.write_json(select, {'seconds': 1.0,
                                         'result': {'student': 'student_distilled'}})
  run._set_aside_stale_scratch()  # pylint: disable=protected-access
  assert run.stage_result('student_scratch') == scratch  # the chosen data: kept
  quickstart.qs_eval.write_json(select, {'seconds': 1.0, 'result': {'student': 'student_raw'}})
  run._set_aside_stale_scratch()  # pylint: disable=protected-access
  assert run.stage_result('student_scratch') is None
  assert not os.path.exists(run.path('student_scratch'))
  assert os.path.isdir(run.path('student_scratch_on_distilled', '4'))
  assert quickstart.qs_eval.read_json(run.path('student_scratch_on_distilled.json')) == scratch


def test_trains_alongside_only_partners_that_are_still_to_train(tmp_path, monkeypatch):
  monkeypatch.setattr(workers, 'cpu_shares', lambda n: [{0}, {1}])
  config = quickstart.QuickstartConfig(teacher_steps=10, student_start_steps=4)
  run = quickstart.Quickstart(config, str(tmp_path), [], [], progress=False)
  assert run.trains_alongside('teacher') and run.trains_alongside('student_distilled')
  assert not run.trains_alongside('student_raw') and not run.trains_alongside('select')
  run.requested_stages = {'teacher', 'student_distilled'}
  assert not run.trains_alongside('teacher') and not run.trains_alongside('student_distilled')
  run.requested_stages = set(quickstart.STAGES)
  os.makedirs(run.path('stages'))
  quickstart.qs_eval.write_json(run.path('stages', 'student_raw.json'), {'seconds': 1.0})
  assert not run.trains_alongside('teacher')  # already trained
  for off in (dict(concurrent_training=False), dict(scratch_ablation=False)):
    other = quickstart.Quickstart(dataclasses.replace(config, **off), str(tmp_path), [], [],
                                  progress=False)
    assert not other.trains_alongside('student_distilled')
  monkeypatch.setattr(workers, 'cpu_shares', lambda n: None)  # one core, or an accelerator
  assert not quickstart.Quickstart(config, str(tmp_path), [], [],
                                   progress=False).trains_alongside('student_distilled')
  with pytest.raises(ValueError, match='concurrent_training=1 must be True or False'):
    quickstart.QuickstartConfig(concurrent_training=1)


def test_stage_bindings_reach_their_stages_in_order(tmp_path):
  config = quickstart.QuickstartConfig(
      extra_ablations={'slot': ("padir.builders.network_config.length_head = 'slot'",)},
      stage_bindings={'students': 'A = 1', 'student_raw': ('B = 2',), 'teacher': ('C = 3',),
                      'student_slot': ('D = 4',), 'teacher_start': ('E = 5',)})
  run = quickstart.Quickstart(config, str(tmp_path), [], [], progress=False)
  assert run.stage_bindings('teacher') == ('C = 3',)
  assert run.stage_bindings('teacher_start') == ('C = 3', 'E = 5')  # the first leg's after
  assert run.stage_bindings('ar_matched') == ()
  assert run.stage_bindings('student_distilled') == ('A = 1',)
  assert run.stage_bindings('student_raw') == ('A = 1', 'B = 2')
  assert run.stage_bindings('student_slot') == (
      'A = 1', 'D = 4', "padir.builders.network_config.length_head = 'slot'")
  with pytest.raises(ValueError, match="'student' is not a training stage; use one of teacher"):
    quickstart.QuickstartConfig(stage_bindings={'student': ('A = 1',)})
  with pytest.raises(ValueError, match='must be gin binding strings'):
    quickstart.QuickstartConfig(stage_bindings={'teacher': (2.0,)})


def test_the_teacher_beam_row_uses_the_best_validation_beam():
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  from padir import quickstart_eval  # pylint: disable=g-import-not-at-top
  from padir.ar_decoding import ARConfig  # pylint: disable=g-import-not-at-top
  beam = lambda lp, bleu, **kw: {'config': {'method': 'beam', 'beam_size': 4,
                                            'length_penalty': lp, **kw}, 'bleu': bleu}
  candidates = [{'config': {'method': 'greedy', 'beam_size': 4, 'length_penalty': 0.6},
                 'bleu': 20.0}, beam(0.6, 11.0), beam(1.5, 13.9), beam(2.0, 11.7)]
  run = SimpleNamespace(cfg=SimpleNamespace(eval_beam_size=4),
                        stage_result=lambda s: {'result': {'choice': {'candidates': candidates}}})
  best = ARConfig(method='beam', beam_size=4, length_penalty=1.5)
  assert quickstart_eval.teacher_beam(run) == (best, True)
  candidates.append(beam(1.5, 14.5, no_repeat_ngram=4))  # the n-gram ban comes with it
  assert quickstart_eval.teacher_beam(run) == (
      ARConfig(method='beam', beam_size=4, length_penalty=1.5, no_repeat_ngram=4), True)
  run.cfg.eval_beam_size = 8  # no candidate with that beam: ARConfig's defaults
  assert quickstart_eval.teacher_beam(run) == (ARConfig(method='beam', beam_size=8), False)


def _rerun_with_choice(run, tmp_path, pick, stages):
  """A copy of the run whose select stage chose the first candidate ``pick(setting)`` accepts,
  with ``stages`` run again on it: the copy's dir."""
  import shutil  # pylint: disable=g-import-not-at-top
  out, _ = run
  copy = str(tmp_path / 'run')
  shutil.copytree(out, copy)
  marker = os.path.join(copy, 'stages', 'select.json')
  record = _load(marker)
  result = record['result']
  chosen = next(c for c in result['candidates'] if pick(c['setting']))
  result.update(chosen=chosen['setting'], chosen_name=chosen['name'], student=chosen['student'])
  quickstart.qs_eval.write_json(marker, record)
  for stage in stages:
    os.remove(os.path.join(copy, 'stages', f'{stage}.json'))
  assert quickstart.main(FLAGS + [f'--output_dir={copy}', f'--stages={",".join(stages)}']) == 0
  return copy


def test_ablations_of_a_pruned_choice(run, tmp_path):
  """A setting chosen with length pruning: its ablations switch pruning off, and re-ranking
  (which needs every candidate finished) replaces pruning instead of joining it."""
  copy = _rerun_with_choice(run, tmp_path, lambda s: s['prune'], ('ablations',))
  labels = [a['label'] for a in _load(os.path.join(copy, 'stages', 'ablations.json'))['result']]
  assert 'no length pruning (every candidate runs every pass)' in labels
  assert 'teacher re-ranking on (instead of length pruning)' in labels


def test_a_choice_with_teacher_fixes_is_ablated_and_benchmarked(run, tmp_path):
  """A setting whose teacher fixes tokens: the ablation switches the fixes off, and the
  benchmark times it (the small random-weight networks have no teacher, so no fixes)."""
  copy = _rerun_with_choice(run, tmp_path, lambda s: s['teacher_fix'],
                            ('ablations', 'benchmark'))
  labels = [a['label'] for a in _load(os.path.join(copy, 'stages', 'ablations.json'))['result']]
  assert 'the teacher fixes no token (re-ranking only)' in labels
  assert 'the teacher fixes in one round (not 2)' in labels
  assert "teacher re-ranking off (and with it the teacher's fixes)" in labels
  bench = _load(os.path.join(copy, 'stages', 'benchmark.json'))['result']
  assert bench['small']['latency_ms'] and bench['latency_ms']


def test_students_start_where_the_teachers_first_leg_ends(tmp_path):
  split = quickstart.Quickstart(quickstart.QuickstartConfig(teacher_steps=10,
                                                            student_start_steps=4),
                                str(tmp_path), [], [], progress=False)
  assert split.init_dir('teacher') == quickstart.TEACHER_START
  assert split.init_dir('student_raw') == split.init_dir('student_distilled') == 'teacher_start'
  assert split.init_dir('student_scratch') is None
  assert not split.trains_matched_ar  # the teacher is the AR model trained as long
  macros = split._stage_macros('teacher', 'data', 6)  # pylint: disable=protected-access
  assert macros['padir.checkpoints.CheckpointConfig.init_from'] == split.path('teacher_start')
  assert macros['TRAIN_STEPS'] == 6
  whole = quickstart.Quickstart(quickstart.QuickstartConfig(teacher_steps=10), str(tmp_path),
                                [], [], progress=False)
  assert whole.init_dir('teacher') is None
  assert whole.init_dir('student_raw') == whole.init_dir('ar_matched') == 'teacher'
  assert whole.trains_matched_ar
  with pytest.raises(ValueError, match=r'student_start_steps=10 must be an integer between 1 '
                                       r'and teacher_steps - 1 \(9\)'):
    quickstart.QuickstartConfig(teacher_steps=10, student_start_steps=10)
  with pytest.raises(ValueError, match="set student_init='teacher' or student_start_steps=None"):
    quickstart.QuickstartConfig(teacher_steps=10, student_start_steps=4, student_init='scratch')
