"""Tests for the decoding speed benchmark harness (tiny shapes; no timing assertions)."""

import json

import pytest

from padir.bench import decode as bench_decode
from padir.bench import hf_generate
from padir import bench


def test_run_benchmark_rows_summary_and_report(tmp_path):
  settings = bench_decode.Settings(
      configs=('tiny',), vocab_size=256, source_length=6, output_length=6, latency_batch=1,
      throughput_batch=0, iterations=(1, 2), length_beams=(1,), latency_budget_s=0.0,
      throughput_budget_s=0.0, max_repeats=1, min_repeats=1, huggingface=False,
      deep_shallow=False, mask_predict=False, ar_beam=0)
  result = bench_decode.run_benchmark(settings, log=lambda _: None)
  labels = {(r['label'], r['batch']) for r in result['rows']}
  assert labels == {('AR greedy (KV cache)', 1), ('PaDIR T=1, length beam 1', 1),
                    ('PaDIR T=2, length beam 1', 1)}
  assert 'tiny/b1/decoder_pass' in result['parts'] and 'tiny/b1/encoder' in result['parts']
  row = next(r for r in result['rows'] if r['method'] == 'padir' and r['iterations'] == 2)
  assert row['runs'] == 1 and row['ms'] > 0 and 'vs_ar_greedy' in row
  assert 'batch1_iteration_over_decoder_pass' in result['summary']['tiny']
  json_path, md_path = bench_decode.write_results(result, str(tmp_path / 'decode_cpu'))
  assert json.load(open(json_path))['settings']['output_length'] == 6
  report = open(md_path).read()
  assert 'usable CPU cores' in report and '| PaDIR T=1, length beam 1 |' in report


def test_cli_arguments_and_dispatch(capsys):
  settings, output = bench_decode.parse_args(['--configs=small', '--iterations=1,4',
                                              '--no_huggingface', '--output=x/y'])
  assert settings.configs == ('small',) and settings.iterations == (1, 4)
  assert not settings.huggingface and output == 'x/y'
  with pytest.raises(SystemExit):
    bench_decode.parse_args(['--length_beams=2'])
  assert bench.main(['--help']) == 0
  listed = capsys.readouterr().out
  assert all(f'  {name} ' in listed for name in ('decode', 'train', 'data'))
  assert bench.main(['nope']) == 2
  assert 'unknown benchmark' in capsys.readouterr().err
  # Dispatch reaches the named module: its own argument parser answers --help.
  with pytest.raises(SystemExit) as exit_info:
    bench.main(['train', '--help'])
  assert exit_info.value.code == 0
  assert 'python -m padir.bench train' in capsys.readouterr().out


def test_huggingface_reference_generates_the_requested_length():
  from padir.network import T5Config  # pylint: disable=g-import-not-at-top
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = T5Config.preset('tiny', vocab_size=128, dropout_rate=0.0)
  timing = hf_generate.time_generate(dict(
      network=dataclasses.asdict(cfg), sources=[[5, 6, 7, 8]], num_beams=2, length=5,
      budget_s=0.0, min_repeats=1, max_repeats=1))
  assert timing['output_tokens'] == 5 and timing['runs'] == 1
  assert timing['torch_threads'] >= 1
