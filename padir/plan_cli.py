r"""``padir plan``: the pod-scale plan of a preset or a gin experiment (`padir.plan`).

  padir plan --size=base --objective=padir --target=v5e-64 --mesh=auto
  padir plan --size=xl --objective=ar --devices=32 --device=v4 --mesh=-1,4,1 --json=plan.json
  padir plan --gin_file=experiments/wmt14_ende_padir.gin --target=v4-32 \
      --gin.padir.builders.network_config.dtype="'bfloat16'"

With ``--gin_file`` the experiment's model, sizes, batch, lengths, microbatches and (when it
sets one) mesh are the defaults; flags on the command line win. ``--target`` names a slice
(`padir.plan.TARGETS`: device and device count); ``--device`` / ``--devices`` /
``--device_memory_gib`` describe any other. ``--mesh=auto`` picks the mesh and prints the
``--gin.`` binding that selects it for ``padir.train``.

The simulated device count must be set before JAX starts, so the command re-runs itself in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` when this process has
fewer CPU devices.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from typing import Any, Sequence

import jax

from padir.plan import DEVICES, OBJECTIVES, TARGETS, PlanSpec, format_plan, run_plan

_CHILD_ENV = 'PADIR_PLAN_SUBPROCESS'


# ---------------------------------------------------------------------------- command line


def parse_mesh(text: str) -> tuple[int, int, int] | None:
  """'auto' -> None; 'data,fsdp,tensor' -> a tuple (checked for three integers)."""
  if text == 'auto':
    return None
  try:
    values = tuple(int(v) for v in text.split(','))
  except ValueError:
    values = ()
  if len(values) != 3:
    raise ValueError(f'--mesh={text!r} must be "auto" or data,fsdp,tensor (e.g. -1,4,1).')
  return values  # type: ignore[return-value]


_OBJECTIVE_OF_MODEL = {'PadirModel': 'padir', 'EncoderDecoderModel': 'ar'}


def defaults_from_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> dict[str, Any]:
  """Flag defaults read from a gin experiment: model, sizes, batch, lengths, mesh.

  The experiment's mesh is used when it sets one other than the trainer default (-1, 1, 1);
  otherwise the plan picks one (``auto``).

  Raises:
    ValueError: a model class the plan does not know.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from padir import gin_utils  # pylint: disable=g-import-not-at-top
  for module in ('padir.models', 'padir.partitioning', 'padir.train'):
    importlib.import_module(module)  # registers the configurables experiments bind
  gin_utils.parse_gin(gin_files, gin_bindings, finalize=False, required=False)

  def query(name: str) -> Any:
    try:
      return gin.query_parameter(name)
    except (ValueError, KeyError):
      return None

  out: dict[str, Any] = {}
  model_cls = query('padir.builders.build_model.model_cls')
  if model_cls is not None:
    name = model_cls.configurable.name
    if name not in _OBJECTIVE_OF_MODEL:
      raise ValueError(f'padir plan knows the models {sorted(_OBJECTIVE_OF_MODEL)}, not {name}.')
    out['objective'] = _OBJECTIVE_OF_MODEL[name]
  lengths = query('%TASK_FEATURE_LENGTHS') or {}
  pairs = {'size': 'padir.builders.network_config.size',
           'dtype': 'padir.builders.network_config.dtype',
           'scan_layers': 'padir.builders.network_config.scan_layers',
           'remat_policy': 'padir.builders.network_config.remat_policy',
           'vocab_size': 'padir.builders.network_config.vocab_size',
           'stages': 'padir.models.PadirModel.num_train_stages',
           'batch_size': '%BATCH_SIZE', 'num_microbatches': '%NUM_MICROBATCHES'}
  for field, name in pairs.items():
    value = query(name)
    if value is not None:
      out[field] = value
  if 'inputs' in lengths:
    out['input_length'] = int(lengths['inputs'])
  if 'targets' in lengths:
    out['target_length'] = int(lengths['targets'])
  mesh = query('padir.partitioning.Partitioner.mesh_shape')
  if mesh is not None and tuple(mesh) != (-1, 1, 1):
    out['mesh'] = ','.join(str(m) for m in mesh)
  return out


def spec_from_args(args: argparse.Namespace) -> PlanSpec:
  """A PlanSpec from parsed flags (``--target`` sets the device and the device count)."""
  device, num_devices = args.device, args.devices
  if args.target:
    if args.target not in TARGETS:
      raise ValueError(f'Unknown target {args.target!r}; choose from {sorted(TARGETS)} or give '
                       '--devices and --device.')
    device, num_devices = TARGETS[args.target]
  spec = PlanSpec(size=args.size, objective=args.objective, stages=args.stages,
                  batch_size=args.batch_size, input_length=args.input_length,
                  target_length=args.target_length, vocab_size=args.vocab_size,
                  dtype=args.dtype, scan_layers=args.scan_layers,
                  remat_policy=args.remat_policy, num_devices=num_devices,
                  mesh=parse_mesh(args.mesh), device=device,
                  device_memory_gib=args.device_memory_gib, headroom=args.headroom,
                  decode_batch_size=args.decode_batch_size,
                  decode_iterations=args.decode_iterations,
                  largest_batch=args.largest_batch, train=args.train,
                  num_microbatches=args.num_microbatches)
  spec.validate()
  return spec


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='padir plan', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', default='base')
  parser.add_argument('--objective', default='padir', choices=OBJECTIVES)
  parser.add_argument('--stages', type=int, default=2, help='unrolled PaDIR training stages')
  parser.add_argument('--batch_size', type=int, default=512)
  parser.add_argument('--input_length', type=int, default=128)
  parser.add_argument('--target_length', type=int, default=128)
  parser.add_argument('--vocab_size', type=int, default=32128)
  parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  parser.add_argument('--scan_layers', action='store_true')
  parser.add_argument('--remat_policy', default='none')
  parser.add_argument('--target', default=None, help=f'one of {sorted(TARGETS)}')
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--device', default='h100', help=f'one of {sorted(DEVICES)} or a name')
  parser.add_argument('--device_memory_gib', type=float, default=None)
  parser.add_argument('--headroom', type=float, default=0.9)
  parser.add_argument('--mesh', default='auto', help='"auto" or data,fsdp,tensor')
  parser.add_argument('--decode_batch_size', type=int, default=0,
                      help='also compile the decode step for this global batch (0: no)')
  parser.add_argument('--decode_iterations', type=int, default=4)
  parser.add_argument('--largest_batch', type=lambda s: s.lower() in ('1', 'true', 'yes'),
                      default=True, help='compile a second batch size to fit the largest batch')
  parser.add_argument('--num_microbatches', type=int, default=1)
  parser.add_argument('--train', type=lambda s: s.lower() in ('1', 'true', 'yes'),
                      default=True, help='false: compile only the decode step (explicit mesh)')
  parser.add_argument('--json', default=None, help='also write the plan as JSON here')
  return parser


def _has_devices(num_devices: int) -> bool:
  try:
    devices = jax.devices('cpu')
  except RuntimeError:
    return False
  return len(devices) >= num_devices and jax.default_backend() == 'cpu'


def subprocess_env(num_devices: int) -> dict[str, str]:
  """This environment with N simulated CPU devices (other XLA flags kept)."""
  env = dict(os.environ)
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={num_devices}'])
  env['JAX_PLATFORMS'] = 'cpu'
  env[_CHILD_ENV] = '1'
  return env


def main(argv: Sequence[str] | None = None) -> int:
  """``padir plan [flags]``: prints the plan (and writes ``--json``)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = _parser()
  from padir import gin_utils  # pylint: disable=g-import-not-at-top
  try:
    gin_args = gin_utils.split_gin_args(argv)
    if gin_args.gin_files:
      parser.set_defaults(**defaults_from_gin(gin_args.gin_files, gin_args.gin_bindings))
    args = parser.parse_args(gin_args.rest)
    spec = spec_from_args(args)
  except ValueError as e:
    parser.error(str(e))
  if not os.environ.get(_CHILD_ENV) and not _has_devices(spec.num_devices):
    cmd = [sys.executable, '-m', 'padir.plan_cli', *argv]
    return subprocess.run(cmd, env=subprocess_env(spec.num_devices), check=False).returncode
  plan = run_plan(spec, log=lambda m: print(m, flush=True))
  print(format_plan(plan))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(plan, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
