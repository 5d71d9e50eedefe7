r"""Training speed: tokens/s and model FLOPs utilisation (MFU) against a measured matmul peak.

  python -m padir.bench train --sizes=tiny,small --batch_size=16 --length=64 --steps=5 \
      [--objective=padir|ar] [--dtype=float32|bfloat16] [--profile] \
      [--network='{"emb_dim": 128, ...}'] [--output=benchmarks/results/train.md]

For each size it builds the model as ``padir.builders.build_model`` does (shipped 'bible'
vocabulary, 8k pieces; ``--network`` overrides fields of every size's preset), compiles the
real sharded train step (`padir.trainer.Trainer`, Adafactor) on all local devices, times ``--steps`` steps on synthetic full-length batches after one warm-up
step, and reports:

* tokens/s: (source + target) tokens per second, all positions real (no padding);
* model FLOPs per step: 6 x (matmul parameters x tokens they see) + attention score/value
  matmuls, counting every unrolled PaDIR decoder stage (the usual 6ND accounting; embedding
  lookups are free, the output projection is counted);
* XLA FLOPs per step: what XLA's cost analysis counts for the compiled step;
* peak: the best of several timed ``[N, N] x [N, N]`` matmuls in the benchmark dtype on the
  same devices (``--matmul_size``), i.e. what this machine really sustains;
* MFU = model FLOPs per second / peak;
* with ``--profile``, where the step's kernel time goes, per source function
  (`padir.bench.ops.op_profile`: the loss, the output projection, attention, the optimizer).

On a shared machine other load only slows things down, so both the step time (fastest of
``--steps`` timed steps) and the peak (best matmul, measured before and after the models) are
best cases; the load average is reported with the numbers. Because contention can still
differ between the peak and the steps, MFU is also given per CPU second of this process
(model FLOPs per CPU second / matmul FLOPs per CPU second), which other processes do not skew.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from padir import builders
from padir import errors
from padir import models
from padir import optimizers
from padir import partitioning
from padir import trainer as trainer_lib
from padir.bench import decode as bench_decode
from padir.bench import ops as bench_ops


@dataclasses.dataclass
class Peak:
  """Best matmul throughput: per wall-clock second and per CPU second of this process."""
  flops_per_sec: float
  flops_per_cpu_sec: float

  def best(self, other: 'Peak') -> 'Peak':
    return Peak(max(self.flops_per_sec, other.flops_per_sec),
                max(self.flops_per_cpu_sec, other.flops_per_cpu_sec))


def measure_matmul_peak(size: int = 2048, dtype: str = 'float32', repeats: int = 5,
                        devices: Sequence[Any] | None = None) -> Peak:
  """Sustained FLOP/s of a jitted square matmul, sharded over ``devices`` along rows."""
  devices = list(devices or jax.local_devices())
  mesh = jax.make_mesh((len(devices),), ('data',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data', None))
  full = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  dt = jnp.dtype(dtype)
  a = jax.device_put(jnp.ones((size, size), dt), rows)
  b = jax.device_put(jnp.ones((size, size), dt) / size, full)
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dt), out_shardings=rows)
  matmul(a, b).block_until_ready()
  wall, cpu = float('inf'), float('inf')
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    matmul(a, b).block_until_ready()
    wall = min(wall, time.perf_counter() - start)
    cpu = min(cpu, time.process_time() - start_cpu)
  flops = 2.0 * size**3
  return Peak(flops / wall, flops / max(cpu, 1e-9))


def model_flops_per_step(model: Any, batch_size: int, input_length: int,
                         target_length: int) -> float:
  """6ND-style training FLOPs of one step (forward + backward), attention included."""
  cfg = model.network_config
  e, h, d, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  n_in = len(cfg.mlp_activations)
  attn_params = 4 * e * h * d
  mlp_params = (n_in + 1) * e * f
  enc_len = input_length + (1 if cfg.use_length_head else 0)
  enc_layer = attn_params + mlp_params
  dec_layer = 2 * attn_params + mlp_params + (attn_params if cfg.positional_attention else 0)
  stages = getattr(model, 'num_train_stages', 1)
  # Parameter matmuls: every parameter sees each token of its stack once per stage.
  enc = cfg.num_encoder_layers * enc_layer * enc_len
  dec = stages * (cfg.num_decoder_layers * dec_layer + e * cfg.vocab_size) * target_length
  # Attention matmuls (QK^T and AV): 2 x L_q x L_k x H x D multiply-adds each.
  enc_att = cfg.num_encoder_layers * 2 * enc_len * enc_len * h * d
  self_len = target_length
  dec_att = stages * cfg.num_decoder_layers * 2 * h * d * (
      self_len * self_len + self_len * enc_len)
  forward_macs = enc + dec + enc_att + dec_att
  if cfg.use_length_head:
    forward_macs += e * cfg.max_target_length
  return 6.0 * batch_size * forward_macs


@dataclasses.dataclass
class Result:
  size: str
  objective: str
  params: int
  batch_size: int
  length: int
  seconds_per_step: float
  cpu_seconds_per_step: float
  tokens_per_sec: float
  model_flops: float
  xla_flops: float | None
  compile_seconds: float
  profile: Any = None  # a padir.bench.ops.OpProfile of the step (--profile), or None

  def mfu(self, peak: Peak) -> float:
    """Model FLOPs per wall second / the best matmul FLOPs per wall second."""
    return self.model_flops / self.seconds_per_step / peak.flops_per_sec

  def mfu_cpu(self, peak: Peak) -> float:
    """The same per CPU second of this process: insensitive to other load on the machine."""
    return self.model_flops / self.cpu_seconds_per_step / peak.flops_per_cpu_sec


def bench_size(size: str, objective: str, batch_size: int, length: int, steps: int,
               dtype: str, partitioner: partitioning.Partitioner,
               dropout_rate: float = 0.1, padir_stages: int = 2,
               profile: bool = False,
               network_overrides: Mapping[str, Any] | None = None) -> Result:
  model_cls = models.PadirModel if objective == 'padir' else models.EncoderDecoderModel
  network = {'size': size, 'overrides': {**(network_overrides or {}), 'dtype': dtype,
                                         'dropout_rate': dropout_rate}}
  # padir_stages defaults to the 2 unrolled stages of objectives/padir.gin
  kwargs = {'num_train_stages': padir_stages} if objective == 'padir' else {}
  model = builders.build_model(model_cls, vocabulary='bible',
                               task_feature_lengths={'inputs': length, 'targets': length},
                               network=network, model_kwargs=kwargs)
  rng = np.random.default_rng(0)
  real = model.special_ids.num_real_pieces
  enc = rng.integers(3, real, size=(batch_size, length)).astype(np.int32)
  dec = rng.integers(3, real, size=(batch_size, length)).astype(np.int32)
  enc[:, -1] = dec[:, -1] = 1
  batch = {'encoder_input_tokens': enc, 'decoder_target_tokens': dec,
           'decoder_loss_weights': np.ones_like(dec)}
  trainer = trainer_lib.Trainer(model, optimizers.adafactor(learning_rate=1e-3), partitioner,
                                {k: v.shape for k, v in batch.items()})
  state = trainer.init_state()
  trainer.compile()
  global_batch = partitioner.shard_batch(batch)
  state, metrics = trainer.train_step(state, global_batch)  # warm-up
  jax.block_until_ready(metrics)
  times, cpu_times = [], []
  for _ in range(steps):
    start, start_cpu = time.perf_counter(), time.process_time()
    state, metrics = trainer.train_step(state, global_batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - start_cpu)
  # The fastest step: the machine may be shared, and other load only ever slows a step down.
  seconds = min(times)
  params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(trainer.abstract_params))
  op_profile = None
  if profile:  # the same step, without donation so that one state serves every call
    with partitioner.context():
      op_profile = bench_ops.op_profile(trainer.jitted_train_step(donate=False),
                                        [(state, global_batch)] * 3)
  return Result(size, objective, params, batch_size, length, seconds, min(cpu_times),
                2 * batch_size * length / seconds,
                model_flops_per_step(model, batch_size, length, length),
                trainer.train_step_flops, trainer.compile_seconds or 0.0, op_profile)


def _report(results: list[Result], peak: float, args: argparse.Namespace, command: str) -> str:
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  devices = jax.local_devices()
  lines = [
      f'# Training speed ({devices[0].platform}, {args.dtype})', '',
      f'Measured {now} with:', '', '```', command, '```', '',
      f'- devices: {len(devices)} x {devices[0].device_kind} ({bench_decode.cpu_model()}, '
      f'{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f} at the start)',
      f'- jax {jax.__version__}; matmul peak ({args.matmul_size}x{args.matmul_size}, '
      f'{args.dtype}): **{peak.flops_per_sec / 1e9:.1f} GFLOP/s** '
      f'({peak.flops_per_cpu_sec / 1e9:.1f} GFLOP per CPU second)',
      f'- batch {args.batch_size} x {args.length} source + {args.length} target tokens, '
      f'Adafactor, dropout {args.dropout_rate}; PaDIR with {args.padir_stages} unrolled '
      'decoder stages' + (f'; network overrides {args.network}' if args.network != '{}' else ''),
      '',
      '| size | objective | params | s/step (fastest) | tokens/s | model GFLOP/step | '
      'XLA GFLOP/step | MFU (wall) | MFU (CPU time) | compile s |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for r in results:
    xla = f'{r.xla_flops / 1e9:.1f}' if r.xla_flops else 'n/a'
    lines.append(f'| {r.size} | {r.objective} | {r.params / 1e6:.1f}M | '
                 f'{r.seconds_per_step:.3f} | {r.tokens_per_sec:,.0f} | '
                 f'{r.model_flops / 1e9:.1f} | {xla} | {100 * r.mfu(peak):.1f}% | '
                 f'{100 * r.mfu_cpu(peak):.1f}% | {r.compile_seconds:.0f} |')
  for r in results:
    if r.profile is not None:
      lines += ['', f'### Where a {r.size} {r.objective} step\'s time goes (--profile, '
                'three profiled steps)', '', r.profile.to_markdown()]
  return '\n'.join(lines) + '\n'


@errors.command('python -m padir.bench train')
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m padir.bench train', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', default='tiny,small')
  parser.add_argument('--objectives', default='padir', help='padir and/or ar, comma-separated')
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--length', type=int, default=64)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--dropout_rate', type=float, default=0.1)
  parser.add_argument('--padir_stages', type=int, default=2,
                      help='unrolled decoder stages of the PaDIR objective')
  parser.add_argument('--matmul_size', type=int, default=2048)
  parser.add_argument('--profile', action='store_true',
                      help='also profile the step: kernel time per source function '
                           '(padir.bench.ops), e.g. the loss against the output projection')
  parser.add_argument('--output', default=None, help='also write the markdown report here')
  parser.add_argument('--network', default='{}',
                      help='JSON of T5Config fields that override every size\'s preset, e.g. '
                      '\'{"emb_dim": 128, "mlp_dim": 256, "head_dim": 32, "num_encoder_layers": '
                      '3, "num_decoder_layers": 3}\' (the quickstart\'s network with --sizes=tiny)')
  args = parser.parse_args(argv)
  try:
    network_overrides = json.loads(args.network)
  except json.JSONDecodeError as err:
    parser.error(f'--network={args.network!r} is not JSON ({err}); give an object such as '
                 '\'{"emb_dim": 128}\'.')
  if not isinstance(network_overrides, dict):
    parser.error(f'--network={args.network!r} must be a JSON object of T5Config fields, such as '
                 '\'{"emb_dim": 128}\'.')
  command = 'python -m padir.bench train ' + ' '.join(argv if argv is not None else sys.argv[1:])
  partitioner = partitioning.Partitioner((-1, 1, 1), devices=jax.local_devices())
  peak = measure_matmul_peak(args.matmul_size, args.dtype)
  print(f'matmul peak: {peak.flops_per_sec / 1e9:.1f} GFLOP/s, '
        f'{peak.flops_per_cpu_sec / 1e9:.1f} GFLOP per CPU second')
  results = []
  for size in args.sizes.split(','):
    for objective in args.objectives.split(','):
      if objective not in ('padir', 'ar'):
        parser.error(f'--objectives: unknown {objective!r} (padir, ar)')
      r = bench_size(size, objective, args.batch_size, args.length, args.steps, args.dtype,
                     partitioner, args.dropout_rate, args.padir_stages, args.profile,
                     network_overrides)
      print(f'{size} {objective}: {r.seconds_per_step:.3f} s/step, {r.tokens_per_sec:,.0f} '
            f'tokens/s, MFU {100 * r.mfu(peak):.1f}% wall, {100 * r.mfu_cpu(peak):.1f}% CPU time '
            '(against the peak measured so far)')
      results.append(r)
  peak = peak.best(measure_matmul_peak(args.matmul_size, args.dtype))
  report = _report(results, peak, args, command)
  print(report)
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, 'w', encoding='utf-8') as f:
      f.write(report)
  return 0


if __name__ == '__main__':
  sys.exit(main())
