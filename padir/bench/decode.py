"""Decoding speed: AR (greedy, beam) vs PaDIR refinement, latency at batch 1, throughput at 64.

``python -m padir.bench decode [--configs=tiny,small] [--output=benchmarks/results/decode_cpu]``

For each network size it times, on one machine and in one run:

* AR greedy and AR beam 4 with the KV cache (cross-attention keys/values computed once, one
  jitted ``lax.while_loop``), for the equal-depth model and for the deep-encoder /
  one-layer-decoder model of Kasai et al. ("Deep Encoder, Shallow Decoder", ICLR 2021; the
  encoder gets twice the layers);
* PaDIR refinement with 1, 2, 4 and 8 iterations and length beam 1 and 3 (random canvas,
  keep-all rule), and Mask-Predict with 4 iterations (the sparse-logits path);
* Hugging Face transformers' T5 ``generate`` (PyTorch, same sizes) greedy and beam 4;
* the parts: one encoder pass, one plain decoder forward pass ([B, L] -> [B, L, V] logits,
  reduced on device by a max) and the marginal cost of one refinement iteration
  ((t(T=8) - t(T=1)) / 7).

Weights are random, so nothing converges: every decoder runs a fixed amount of work. Outputs
have exactly ``--output_length`` tokens: AR decoders cannot emit EOS earlier (``min_length``,
Hugging Face's ``min_new_tokens``), PaDIR decodes at that length with early stopping off, and
the canvas width equals the AR cache length. Sources have ``--source_length`` tokens.

Times are the best (min) of repeated calls after a warm-up call (which compiles): on a shared
machine the minimum is the least disturbed by other processes. The JSON holds every row
(min, median, runs) and the hardware; the markdown holds the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

SPEED_TARGETS = {
    'small_batch1_padir4_speedup_vs_ar_greedy': 2.5,
    'iteration_over_decoder_pass': 1.15,
}


@dataclasses.dataclass
class Settings:
  """What the benchmark runs."""
  configs: tuple[str, ...] = ('tiny', 'small')
  vocab_size: int = 32128
  source_length: int = 40
  output_length: int = 40
  latency_batch: int = 1
  throughput_batch: int = 64
  iterations: tuple[int, ...] = (1, 2, 4, 8)
  length_beams: tuple[int, ...] = (1, 3)
  ar_beam: int = 4
  length_penalty: float = 0.6
  latency_budget_s: float = 4.0
  throughput_budget_s: float = 12.0
  max_repeats: int = 20
  min_repeats: int = 3
  huggingface: bool = True
  deep_shallow: bool = True
  mask_predict: bool = True
  seed: int = 0


# ---------------------------------------------------------------------------------------
# Timing and hardware.


def time_call(fn: Callable[[], Any], budget_s: float, min_repeats: int,
              max_repeats: int) -> dict[str, float]:
  """Median / min wall time of ``fn()`` (which must block) after one warm-up call."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times: list[float] = []
  while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < budget_s):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return dict(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times),
              runs=len(times), first_call_s=first)


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else what the platform module says."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
  """The machine and software the numbers come from."""
  import jax  # pylint: disable=g-import-not-at-top
  info = dict(
      cpu=cpu_model(),
      cpu_cores_usable=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
      else os.cpu_count(),
      platform=platform.platform(),
      python=platform.python_version(),
      jax=jax.__version__,
      jax_backend=jax.default_backend(),
      jax_devices=[str(d.device_kind) for d in jax.local_devices()],
      load_average_start=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
  )
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                transformers=transformers.__version__)
  except ImportError:
    pass
  return info


# ---------------------------------------------------------------------------------------
# The decoders under test.


class _Bench:
  """Builds the models of one size and times every decoder on it."""

  def __init__(self, preset: str, settings: Settings):
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    from padir.network import T5Config, Transformer  # pylint: disable=g-import-not-at-top
    from padir.special_ids import special_ids  # pylint: disable=g-import-not-at-top
    self.jax = jax
    self.preset = preset
    self.s = settings
    extra_ids = 100
    self.ids = special_ids(settings.vocab_size - extra_ids, extra_ids, settings.vocab_size)
    base = T5Config.preset(preset, vocab_size=settings.vocab_size, dropout_rate=0.0,
                           max_target_length=settings.output_length)
    self.padir_cfg = base.replace(decoder_mode='bidirectional', length_id=self.ids.length)
    self.ar_cfg = base.replace(decoder_mode='causal', use_length_head=False)
    self.ds_cfg = self.ar_cfg.replace(num_encoder_layers=2 * base.num_encoder_layers,
                                      num_decoder_layers=1)
    self.models = {name: Transformer(cfg) for name, cfg in
                   (('padir', self.padir_cfg), ('ar', self.ar_cfg), ('ds', self.ds_cfg))}
    self._params = {}
    self._nn = nn
    self._encode = None
    rng = np.random.RandomState(settings.seed)
    lo, hi = self.ids.random_token_range
    self.sources = {b: rng.randint(lo, hi, (b, settings.source_length)).astype(np.int32)
                    for b in (settings.latency_batch, settings.throughput_batch) if b > 0}

  @property
  def params(self) -> dict[str, Any]:
    return _LazyParams(self)

  def init_params(self, name: str) -> Any:
    if name not in self._params:
      jnp = self.jax.numpy
      model = self.models[name]
      seed = self.s.seed + list(self.models).index(name)
      init = self.jax.jit(lambda k: self._nn.unbox(model.init(
          {'params': k}, jnp.ones((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32),
          enable_dropout=False)['params']))
      self._params[name] = init(self.jax.random.PRNGKey(seed))
    return self._params[name]

  def _timed(self, fn, args, batch: int) -> dict[str, float]:
    s = self.s
    latency = batch == s.latency_batch
    run = lambda: self.jax.block_until_ready(fn(*args))
    return time_call(run, s.latency_budget_s if latency else s.throughput_budget_s,
                     s.min_repeats if latency else 2, s.max_repeats)

  def ar(self, which: str, method: str, batch: int) -> dict[str, float]:
    from padir import ar_decoding as ad  # pylint: disable=g-import-not-at-top
    s = self.s
    config = ad.ARConfig(method=method, beam_size=max(1, s.ar_beam),
                         length_penalty=s.length_penalty,
                         min_length=s.output_length)
    fns = ad.ARFns(self.models[which])
    fn = self.jax.jit(lambda p, e: ad.ar_decode(fns, p, e, max_length=s.output_length,
                                                config=config)[0])
    return self._timed(fn, (self.params[which], self.sources[batch]), batch)

  def refine(self, iterations: int, length_beam: int, batch: int,
             rule: str = 'keep_all') -> dict[str, float]:
    from padir import refine_decoding as rd  # pylint: disable=g-import-not-at-top
    from padir.remasking import RemaskConfig  # pylint: disable=g-import-not-at-top
    s = self.s
    if rule == 'keep_all':
      config = rd.RefineConfig(num_iterations=iterations, length_beam=length_beam,
                               canvas_init='random', early_stop=False)
    else:
      config = rd.RefineConfig(num_iterations=iterations, length_beam=length_beam,
                               canvas_init='mask', early_stop=False,
                               remask=RemaskConfig(rule=rule, replacement='initial'))
    fns = rd.TransformerFns(self.models['padir'])
    lengths = np.full((batch,), s.output_length, np.int32)
    fn = self.jax.jit(lambda p, e, n: rd.refine_decode(
        fns, p, e, config=config, ids=self.ids, max_length=s.output_length, lengths=n)[0])
    return self._timed(fn, (self.params['padir'], self.sources[batch], lengths), batch)

  def _encoder(self):
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    if self._encode is None:
      model = self.models['padir']
      self._encode = self.jax.jit(lambda p, e: model.apply(
          {'params': p}, e, enable_dropout=False, method=Transformer.encode))
    return self._encode

  def encoder_pass(self, batch: int) -> dict[str, float]:
    return self._timed(self._encoder(), (self.params['padir'], self.sources[batch]), batch)

  def decoder_pass(self, batch: int) -> dict[str, float]:
    """One plain decoder forward pass over a [B, L] canvas -> [B, L, V] logits.

    The logits are reduced on device (a max over the vocabulary) so that the timing does
    not include returning a [B, L, V] array (a fresh output buffer costs page faults).
    """
    from padir.network import Transformer  # pylint: disable=g-import-not-at-top
    jnp = self.jax.numpy
    model = self.models['padir']
    params = self.params['padir']
    src = self.sources[batch]
    encoded, _ = self._encoder()(params, src)
    canvas = jnp.asarray(np.random.RandomState(1).randint(
        3, self.ids.num_real_pieces, (batch, self.s.output_length)), jnp.int32)
    fn = self.jax.jit(lambda p, x, e, c: jnp.max(model.apply(
        {'params': p}, x, e, c, enable_dropout=False, method=Transformer.decode), axis=-1))
    return self._timed(fn, (params, encoded, src, canvas), batch)

  def huggingface(self, num_beams: int, batch: int) -> dict[str, float]:
    """HF T5 ``generate`` timed in a separate process (`padir.bench.hf_generate`)."""
    s = self.s
    latency = batch == s.latency_batch
    request = dict(
        network=dataclasses.asdict(self.ar_cfg), sources=self.sources[batch].tolist(),
        num_beams=num_beams, length=s.output_length, length_penalty=s.length_penalty,
        budget_s=s.latency_budget_s if latency else s.throughput_budget_s,
        min_repeats=s.min_repeats if latency else 2, max_repeats=s.max_repeats, seed=s.seed)
    proc = subprocess.run([sys.executable, '-m', 'padir.bench.hf_generate'],
                          input=json.dumps(request), capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
      raise RuntimeError(f'padir.bench.hf_generate failed:\n{proc.stderr[-2000:]}')
    timing = json.loads(proc.stdout)
    if timing.pop('output_tokens') != s.output_length:
      raise RuntimeError('transformers generated a different number of tokens.')
    return timing


class _LazyParams:
  """``bench.params[name]`` initialises a model's parameters on first use."""

  def __init__(self, bench: _Bench):
    self._bench = bench

  def __getitem__(self, name: str) -> Any:
    return self._bench.init_params(name)


def _row(preset, method, label, batch, timing, **extra) -> dict[str, Any]:
  row = dict(config=preset, method=method, label=label, batch=batch, **extra, **timing)
  row['ms'] = timing['min_ms']  # best of the runs: the least disturbed by other processes
  row['sentences_per_s'] = batch / (row['ms'] / 1e3)
  return row


def run_benchmark(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs every row of the benchmark; returns the JSON-ready result."""
  result: dict[str, Any] = dict(
      benchmark='decode', date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
      hardware=hardware(), settings=dataclasses.asdict(settings), rows=[], parts={})
  batches = tuple(b for b in (settings.latency_batch, settings.throughput_batch) if b > 0)
  for preset in settings.configs:
    bench = _Bench(preset, settings)
    rows = result['rows']

    def add(method, label, fn, batch, **extra):
      timing = fn(batch)
      rows.append(_row(preset, method, label, batch, timing, **extra))
      log(f'{preset:6s} b={batch:<3d} {label:40s} {timing["min_ms"]:10.1f} ms '
          f'(median {timing["median_ms"]:.1f}, {timing["runs"]} runs)')

    for batch in batches:
      add('ar_greedy', 'AR greedy (KV cache)', lambda b: bench.ar('ar', 'greedy', b), batch)
      if settings.ar_beam:
        add('ar_beam', f'AR beam {settings.ar_beam}', lambda b: bench.ar('ar', 'beam', b),
            batch)
      if settings.deep_shallow:
        enc = bench.ds_cfg.num_encoder_layers
        add('ar_greedy_deep_shallow', f'AR greedy, deep-shallow {enc}-1',
            lambda b: bench.ar('ds', 'greedy', b), batch)
        if settings.ar_beam:
          add('ar_beam_deep_shallow', f'AR beam {settings.ar_beam}, deep-shallow {enc}-1',
              lambda b: bench.ar('ds', 'beam', b), batch)
      for beam in settings.length_beams:
        for t in settings.iterations:
          add('padir', f'PaDIR T={t}, length beam {beam}',
              lambda b, t=t, beam=beam: bench.refine(t, beam, b), batch, iterations=t,
              length_beam=beam)
      if settings.mask_predict:
        add('mask_predict', 'Mask-Predict T=4 ([MASK] canvas)',
            lambda b: bench.refine(4, 1, b, 'mask_predict'), batch, iterations=4,
            length_beam=1)
      if settings.huggingface:
        add('hf_greedy', 'HF T5 generate greedy (PyTorch)', lambda b: bench.huggingface(1, b),
            batch)
        if settings.ar_beam:
          add('hf_beam', f'HF T5 generate beam {settings.ar_beam} (PyTorch)',
              lambda b: bench.huggingface(settings.ar_beam, b), batch)
      for part, fn in (('encoder', bench.encoder_pass), ('decoder_pass', bench.decoder_pass)):
        timing = fn(batch)
        result['parts'][f'{preset}/b{batch}/{part}'] = timing
        log(f'{preset:6s} b={batch:<3d} {part:40s} {timing["min_ms"]:10.1f} ms')
  result['hardware']['load_average_end'] = (list(os.getloadavg())
                                            if hasattr(os, 'getloadavg') else None)
  result['summary'] = summarize(result)
  return result


# ---------------------------------------------------------------------------------------
# Summary and report.


def _find(rows, **match) -> dict[str, Any] | None:
  for row in rows:
    if all(row.get(k) == v for k, v in match.items()):
      return row
  return None


def summarize(result: dict[str, Any]) -> dict[str, Any]:
  """Speed-ups against AR greedy and the per-iteration cost, per config."""
  s = result['settings']
  rows = result['rows']
  summary: dict[str, Any] = {}
  for preset in s['configs']:
    out: dict[str, Any] = {}
    for batch in (s['latency_batch'], s['throughput_batch']):
      ar = _find(rows, config=preset, method='ar_greedy', batch=batch)
      if ar is None:
        continue
      for row in rows:
        if row['config'] == preset and row['batch'] == batch:
          row['vs_ar_greedy'] = ar['ms'] / row['ms']
      t1 = _find(rows, config=preset, method='padir', batch=batch, iterations=1, length_beam=1)
      its = [r for r in rows if r['config'] == preset and r['batch'] == batch and
             r['method'] == 'padir' and r['length_beam'] == 1]
      t_max = max(its, key=lambda r: r['iterations']) if its else None
      dec = result['parts'].get(f'{preset}/b{batch}/decoder_pass')
      if t1 and t_max and t_max['iterations'] > 1 and dec:
        per_it = (t_max['ms'] - t1['ms']) / (t_max['iterations'] - 1)
        out[f'batch{batch}_iteration_ms'] = per_it
        out[f'batch{batch}_decoder_pass_ms'] = dec['min_ms']
        out[f'batch{batch}_iteration_over_decoder_pass'] = per_it / dec['min_ms']
      t4 = _find(rows, config=preset, method='padir', batch=batch, iterations=4, length_beam=1)
      if t4:
        out[f'batch{batch}_padir4_speedup_vs_ar_greedy'] = ar['ms'] / t4['ms']
    summary[preset] = out
  return summary


def to_markdown(result: dict[str, Any]) -> str:
  """The report: hardware, one table per network size, the speed targets."""
  hw = result['hardware']
  s = result['settings']
  lb, tb = s['latency_batch'], s['throughput_batch']
  lines = [
      '# Decoding speed: AR vs PaDIR refinement',
      '',
      f'Measured {result["date"][:16]} UTC with `python -m padir.bench decode`.',
      '',
      f'Hardware: {hw["cpu"]}, {hw["cpu_cores_usable"]} usable CPU cores '
      f'(JAX {hw["jax"]} on {hw["jax_backend"]}'
      + (f'; PyTorch {hw["torch"]} with {hw["torch_threads"]} threads, transformers '
         f'{hw["transformers"]}' if 'torch' in hw else '') + '). '
      f'Load average at start {_fmt_load(hw.get("load_average_start"))}, at end '
      f'{_fmt_load(hw.get("load_average_end"))} (a shared machine).',
      '',
      f'Random weights, vocabulary {s["vocab_size"]}, sources of {s["source_length"]} tokens, '
      f'outputs of exactly {s["output_length"]} tokens (AR: EOS masked before, PaDIR: '
      'decoded at that length with early stopping off, canvas width = KV-cache length). '
      'Times are the best of several calls after a compiling warm-up call (the JSON also has '
      'medians). "x AR" = AR greedy time / row time (> 1: faster than AR greedy).',
      '',
  ]
  for preset in s['configs']:
    rows = [r for r in result['rows'] if r['config'] == preset]
    labels = list(dict.fromkeys(r['label'] for r in rows))
    lines += [f'## {preset}', '',
              f'| decoder | latency, batch {lb} (ms) | x AR | throughput, batch {tb} '
              '(sentences/s) | x AR |',
              '|---|---:|---:|---:|---:|']
    for label in labels:
      a = _find(rows, label=label, batch=lb)
      b = _find(rows, label=label, batch=tb)
      cell = lambda r, key, fmt: (fmt.format(r[key]) if r and key in r else '-')
      lines.append(f'| {label} | {cell(a, "ms", "{:.1f}")} | '
                   f'{cell(a, "vs_ar_greedy", "{:.2f}")} | '
                   f'{cell(b, "sentences_per_s", "{:.1f}")} | '
                   f'{cell(b, "vs_ar_greedy", "{:.2f}")} |')
    parts = result['parts']
    sm = result['summary'].get(preset, {})
    for batch in (lb, tb):
      enc = parts.get(f'{preset}/b{batch}/encoder')
      dec = parts.get(f'{preset}/b{batch}/decoder_pass')
      if enc and dec:
        text = (f'- batch {batch}: encoder pass {enc["min_ms"]:.1f} ms, plain decoder '
                f'forward pass {dec["min_ms"]:.1f} ms')
        if f'batch{batch}_iteration_ms' in sm:
          text += (f', one refinement iteration {sm[f"batch{batch}_iteration_ms"]:.1f} ms '
                   f'(x{sm[f"batch{batch}_iteration_over_decoder_pass"]:.2f} of the pass)')
        lines.append(text + '.')
    lines.append('')
  small = result['summary'].get('small', {})
  lines += ['## Targets (small, batch 1)', '']
  key = f'batch{lb}_padir4_speedup_vs_ar_greedy'
  if key in small:
    target = SPEED_TARGETS['small_batch1_padir4_speedup_vs_ar_greedy']
    got = small[key]
    lines.append(f'- PaDIR T=4, length beam 1 vs AR greedy: {got:.2f}x lower latency '
                 f'(target >= {target}x: {"met" if got >= target else "missed"}).')
  key = f'batch{lb}_iteration_over_decoder_pass'
  if key in small:
    target = SPEED_TARGETS['iteration_over_decoder_pass']
    got = small[key]
    lines.append(f'- One refinement iteration / one plain decoder pass: {got:.2f} '
                 f'(target <= {target}: {"met" if got <= target else "missed"}).')
  lines += [
      '',
      '## Notes',
      '',
      '- AR decoding at batch 1 streams every decoder weight once per token (memory-bound); a '
      'refinement iteration streams them once per pass for all positions but does L times the '
      'arithmetic, so on a CPU a pass is far from free. At large batch AR amortises the weight '
      'reads over the batch and wins throughput.',
      '- Random weights never converge, so every PaDIR row runs all its iterations. A trained '
      'model stops rows at fixed points (`aux["iterations"]`), which these numbers do not show.',
      '- Length beam b multiplies the rows of every pass by b.',
      '',
  ]
  return '\n'.join(lines)


def _fmt_load(load) -> str:
  return '-' if not load else '/'.join(f'{x:.1f}' for x in load)


# ---------------------------------------------------------------------------------------
# Command line.


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(x) for x in text.split(',') if x)


def parse_args(argv: Sequence[str]) -> tuple[Settings, str]:
  parser = argparse.ArgumentParser(prog='python -m padir.bench decode',
                                   description=__doc__.split('\n\n')[0])
  d = Settings()
  parser.add_argument('--configs', default=','.join(d.configs),
                      help='network presets, comma separated (tiny, small, base, ...)')
  parser.add_argument('--output', default='benchmarks/results/decode_cpu',
                      help='path prefix of the .json and .md results')
  parser.add_argument('--vocab_size', type=int, default=d.vocab_size)
  parser.add_argument('--source_length', type=int, default=d.source_length)
  parser.add_argument('--output_length', type=int, default=d.output_length)
  parser.add_argument('--latency_batch', type=int, default=d.latency_batch)
  parser.add_argument('--throughput_batch', type=int, default=d.throughput_batch,
                      help='0 skips the throughput rows')
  parser.add_argument('--iterations', default=','.join(map(str, d.iterations)))
  parser.add_argument('--length_beams', default=','.join(map(str, d.length_beams)))
  parser.add_argument('--ar_beam', type=int, default=d.ar_beam, help='0 skips beam search rows')
  parser.add_argument('--latency_budget_s', type=float, default=d.latency_budget_s)
  parser.add_argument('--throughput_budget_s', type=float, default=d.throughput_budget_s)
  parser.add_argument('--max_repeats', type=int, default=d.max_repeats)
  parser.add_argument('--no_huggingface', action='store_true',
                      help='skip the PyTorch / transformers reference')
  parser.add_argument('--no_deep_shallow', action='store_true')
  parser.add_argument('--no_mask_predict', action='store_true')
  args = parser.parse_args(list(argv))
  settings = Settings(
      configs=tuple(c for c in args.configs.split(',') if c), vocab_size=args.vocab_size,
      source_length=args.source_length, output_length=args.output_length,
      latency_batch=args.latency_batch, throughput_batch=args.throughput_batch,
      iterations=_ints(args.iterations), length_beams=_ints(args.length_beams),
      ar_beam=args.ar_beam,
      latency_budget_s=args.latency_budget_s, throughput_budget_s=args.throughput_budget_s,
      max_repeats=args.max_repeats, huggingface=not args.no_huggingface,
      deep_shallow=not args.no_deep_shallow, mask_predict=not args.no_mask_predict)
  if any(b % 2 == 0 for b in settings.length_beams):
    parser.error(f'--length_beams={args.length_beams}: length beams must be odd.')
  if not settings.iterations or min(settings.iterations) < 1:
    parser.error(f'--iterations={args.iterations}: give positive iteration counts.')
  return settings, args.output


def write_results(result: dict[str, Any], output: str) -> tuple[str, str]:
  """Writes ``output.json`` and ``output.md``; returns both paths."""
  out = pathlib.Path(output)
  out.parent.mkdir(parents=True, exist_ok=True)
  json_path, md_path = str(out) + '.json', str(out) + '.md'
  with open(json_path, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
    f.write('\n')
  with open(md_path, 'w', encoding='utf-8') as f:
    f.write(to_markdown(result))
  return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
  settings, output = parse_args(argv or [])
  result = run_benchmark(settings)
  json_path, md_path = write_results(result, output)
  print(to_markdown(result))
  print(f'wrote {json_path} and {md_path}')
  return 0
