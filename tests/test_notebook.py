"""Executes notebooks/padir_colab.ipynb end to end on the CPU with a few training steps."""

import html
import json
import pathlib

import pytest

nbclient = pytest.importorskip('nbclient')
import nbformat  # pylint: disable=g-import-not-at-top,wrong-import-position  (nbclient needs it)

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / 'notebooks' / 'padir_colab.ipynb'
STEPS = 3

# Run after the notebook in the same kernel: what the notebook computed, as JSON.
_PROBE = r'''
import json
print('PROBE' + json.dumps({
    'ar_steps': AR_STEPS, 'padir_steps': PADIR_STEPS,
    'curves': [len(ar_curve), len(padir_curve)],
    'sentences': SENTENCES, 'ar_out': ar_out, 'padir_out': padir_out,
    'held': [held_es, held_en, ar_held, padir_held],
    'iterations': PADIR_ITERATIONS, 'history_shape': list(history.shape), 'width': width,
    'used': used, 'probs_min': float(probs.min()), 'probs_max': float(probs.max()),
    'timings': [[n, p, t] for n, p, t in results],
}))
'''


def _code_cells(nb):
  return [c for c in nb.cells if c.cell_type == 'code']


def test_committed_notebook_is_valid_and_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  cells = _code_cells(nb)
  with_outputs = [i for i, c in enumerate(cells) if c.outputs or c.execution_count is not None]
  assert not with_outputs, f'code cells {with_outputs} carry outputs; clear them before committing'
  params = [c for c in cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(params) == 1, 'exactly one code cell must be tagged "parameters"'
  assert 'PADIR_NOTEBOOK_STEPS' in params[0].source
  assert 'find_spec' in cells[0].source and 'pip' in cells[0].source  # the install cell


def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setenv('PADIR_NOTEBOOK_STEPS', str(STEPS))
  monkeypatch.delenv('XLA_FLAGS', raising=False)  # one CPU device, as on Colab
  nb = nbformat.read(NOTEBOOK, as_version=4)
  probe = nbformat.v4.new_code_cell(_PROBE)
  nb.cells.append(probe)
  client = nbclient.NotebookClient(nb, timeout=600, startup_timeout=120, kernel_name='python3',
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute()  # raises CellExecutionError naming the first cell that fails

  outputs = [o for c in _code_cells(nb) for o in c.outputs]
  streams = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  tables = [o['data']['text/html'] for o in outputs if 'text/html' in o.get('data', {})]
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert 'padir is already installed' in streams
  assert 'Installing' not in streams and 'pip install' not in streams
  assert streams.count(f'{STEPS} steps of') == 2
  # Tables: your sentences, held-out verses, refinement, speed; figures: loss, heatmap, speed.
  assert len(tables) == 4, tables
  assert len(images) == 3

  probe_text = ''.join(o.get('text', '') for o in probe.outputs)
  result = json.loads(probe_text[probe_text.index('PROBE') + len('PROBE'):])
  assert result['ar_steps'] == result['padir_steps'] == STEPS
  assert result['curves'] == [2, 2]  # step 0 and the last step
  n = len(result['sentences'])
  assert len(result['ar_out']) == len(result['padir_out']) == n
  assert all(isinstance(t, str) for t in result['ar_out'] + result['padir_out'])
  held_es, held_en, ar_held, padir_held = result['held']
  assert len(held_es) == len(held_en) == len(ar_held) == len(padir_held) == 8
  assert all(html.escape(text) in tables[0] for text in result['sentences'])
  assert html.escape(held_es[0]) in tables[1] and html.escape(held_en[0]) in tables[1]

  t = result['iterations']
  assert result['history_shape'] == [result['used'], result['width']]
  assert 1 <= result['used'] <= t
  assert 0.0 <= result['probs_min'] <= result['probs_max'] <= 1.0
  assert 'pass 0' in tables[2] and '[MASK]' in tables[2]

  names = [row[0] for row in result['timings']]
  assert names[0] == 'AR greedy' and len(names) == 4
  for name, passes, seconds in result['timings']:
    assert seconds > 0, name
    assert passes >= 1, name
  for (name, passes, _), limit in zip(result['timings'][1:], (1, 2, 4)):
    assert passes <= limit, (name, passes)
  assert 'speed-up vs AR' in tables[3]
