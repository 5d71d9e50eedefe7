"""Tests of padir.summaries: JSONL records, TensorBoard fallback, progress line and ETA."""

import json
import sys

from padir import summaries


def test_jsonl_records_and_missing_tensorboard_note(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorboardX', None)  # not installed
  notes = []
  writer = summaries.MetricWriter(str(tmp_path), print_fn=notes.append)
  writer.write_scalars(10, 'train', {'loss': 2.5, 'steps_per_sec': 3})
  writer.write_scalars(20, 'eval', {'bleu': 12.0})
  writer.write_text(20, 'eval', 'samples', 'ignored without TensorBoard')
  writer.close()
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [(r['step'], r['split']) for r in records] == [(10, 'train'), (20, 'eval')]
  assert records[0]['loss'] == 2.5 and records[1]['bleu'] == 12.0
  assert notes == ['TensorBoard summaries are off: install tensorboardX to get them '
                   '(metrics.jsonl has every number).']
  assert not (tmp_path / 'tensorboard').exists()


def test_progress_rates_eta_and_line():
  now = [100.0]
  progress = summaries.Progress(start_step=0, total_steps=100, clock=lambda: now[0])
  now[0] = 110.0
  progress.pause(5.0)  # e.g. an evaluation
  rates = progress.window(step=10, num_tokens=5000.0)
  assert rates['steps_per_sec'] == 2.0 and rates['tokens_per_sec'] == 1000.0
  assert rates['eta_seconds'] == 45.0
  line = progress.line(10, {'loss': 3.25, 'learning_rate': 0.01}, rates)
  assert line == ('step 10/100 | loss 3.25 | lr 0.01 | 2.00 steps/s | 1.0k tok/s | '
                  'ETA 45s')


def test_format_duration():
  assert summaries.format_duration(5) == '5s'
  assert summaries.format_duration(185) == '3m05s'
  assert summaries.format_duration(3720) == '1h02m'
  assert summaries.format_duration(float('inf')) == '?'


def test_read_records_and_peak_learning_rate(tmp_path):
  assert summaries.read_records(str(tmp_path)) == []
  assert summaries.peak_learning_rate(str(tmp_path)) is None
  lines = [{'step': 10, 'split': 'train', 'learning_rate': 0.01},
           {'step': 20, 'split': 'train', 'learning_rate': 0.03},
           {'step': 20, 'split': 'eval', 'loss': 2.0, 'learning_rate': 0.5},
           {'step': 30, 'split': 'train', 'learning_rate': 0.0}]
  text = ''.join(json.dumps(r) + '\n' for r in lines) + '{"step": 40, "spl'  # torn last line
  (tmp_path / 'metrics.jsonl').write_text(text)
  assert [r['step'] for r in summaries.read_records(str(tmp_path), 'train')] == [10, 20, 30]
  assert len(summaries.read_records(str(tmp_path))) == 4
  assert summaries.peak_learning_rate(str(tmp_path)) == 0.03  # eval records do not count
