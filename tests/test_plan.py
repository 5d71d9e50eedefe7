"""Tests of padir.plan / padir.hlo_stats / padir.bench.scale on a micro model and 8 CPU devices.

The numbers must mean something: FSDP divides the per-device parameter bytes, a pure
data-parallel step only all-reduces, and the plan of a micro model matches what a real
8-device step holds.
"""

import argparse
import dataclasses

import jax
import numpy as np
import pytest

from padir import cli
from padir import hlo_stats
from padir import plan
from padir import plan_cli
from padir.bench import scale

MICRO = dict(num_encoder_layers=1, num_decoder_layers=1, emb_dim=32, mlp_dim=64, num_heads=2,
             head_dim=16)


def _spec(**kwargs):
  base = dict(size='tiny', objective='ar', batch_size=16, input_length=8, target_length=8,
              vocab_size=384, num_devices=8, mesh=(8, 1, 1), largest_batch=False,
              device='v5e', network_overrides=MICRO)
  base.update(kwargs)
  return plan.PlanSpec(**base)


@pytest.fixture(scope='module')
def dp_run():
  """One data-parallel micro AR trainer, compiled once, and its plan."""
  spec = _spec()
  model = plan.build_model(spec)
  trainer = plan.make_trainer(model, spec, spec.mesh, spec.batch_size)
  return spec, model, trainer, plan.plan_trainer(trainer)


# ------------------------------------------------------------------------- HLO parsing

_HLO = """HloModule m, entry_computation_layout={()->f32[]}

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %ag = bf16[4,16]{1,0} all-gather(bf16[1,16]{1,0} %x), replica_groups={}, dimensions={0}
  ROOT %t = (s32[], f32[8]) tuple(%i, %y)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

%body2 (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %ar2 = f32[8]{0} all-reduce(f32[8]{0} %y), replica_groups={}, to_apply=%add
  ROOT %t = (s32[], f32[8]) tuple(%i, %ar2)
}

ENTRY %main (x: f32[16,4]) -> f32[] {
  %ar = (f32[16,4]{1,0}, f32[]) all-reduce(f32[16,4]{1,0} %x, f32[] %z), to_apply=%add
  %w = (s32[], f32[8]) while((s32[], f32[8]) %init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
  %w2 = (s32[], f32[8]) while((s32[], f32[8]) %init), condition=%cond, body=%body2
  ROOT %r = f32[] constant(0)
}
"""


def test_collectives_count_loops_and_tuples():
  stats = hlo_stats.collectives(_HLO)
  assert stats['all-reduce'].count == 2  # the tuple one + once per iteration of the open loop
  assert stats['all-reduce'].bytes == 16 * 4 * 4 + 4 + 8 * 4
  assert stats['all-reduce'].per_loop_iteration == 1
  assert stats['all-gather'].count == 12  # known trip count
  assert stats['all-gather'].bytes == 12 * 4 * 16 * 2
  assert stats['reduce-scatter'].count == 0


_DOT_HLO = """HloModule m, entry_computation_layout={()->f32[]}

%fused (param_0: f32[4,8], param_1: f32[8,16]) -> f32[4,16] {
  %param_0 = f32[4,8]{1,0} parameter(0)
  %param_1 = f32[8,16]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,16]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (p: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %a = f32[4,8]{1,0} parameter(0)
  %b = f32[8,16]{1,0} constant({...})
  %f = f32[4,16]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused
  ROOT %t = (s32[], f32[4,8]) tuple(%i, %a)
}

%cond (p: (s32[], f32[4,8])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[2,5]) -> f32[] {
  %d = f32[2,3]{1,0} dot(f32[2,5]{1,0} %x, f32[5,3]{1,0} %y), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %w = (s32[], f32[4,8]) while((s32[], f32[4,8]) %init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %r = f32[] constant(0)
}
"""


def test_matmul_flops_count_loop_iterations():
  # 3 iterations of a [4,8] x [8,16] dot in a fusion, and one [2,5] x [5,3] dot.
  assert hlo_stats.matmul_flops(_DOT_HLO) == 3 * 2 * 4 * 16 * 8 + 2 * 2 * 3 * 5


def test_array_bytes():
  assert hlo_stats.array_bytes('(f32[2,3]{1,0}, bf16[4], pred[])') == [24, 8, 1]


# ------------------------------------------------------------------------- plan checks


def test_fsdp_divides_parameter_bytes(dp_run):
  spec, model, trainer, _ = dp_run
  dp_params, _ = plan.state_bytes(trainer)
  fsdp_params, _ = plan.state_bytes(plan.make_trainer(model, spec, (1, 8, 1), spec.batch_size))
  assert abs(fsdp_params - dp_params / 8) <= 0.1 * dp_params / 8


def test_data_parallel_step_only_all_reduces_gradients(dp_run):
  _, _, _, step = dp_run
  used = {kind for kind, s in step.collectives.items() if s.count}
  assert used == {'all-reduce'}
  # The gradients (as large as the parameters) cross the devices; little else does.
  assert step.params_bytes <= step.collectives['all-reduce'].bytes <= 2 * step.params_bytes


def test_plan_matches_a_real_8_device_step(dp_run):
  spec, model, trainer, step = dp_run
  rng = np.random.default_rng(0)
  real = model.special_ids.num_real_pieces
  shape = (spec.batch_size, spec.target_length)
  batch = {'encoder_input_tokens': rng.integers(3, real, shape).astype(np.int32),
           'decoder_target_tokens': rng.integers(3, real, shape).astype(np.int32),
           'decoder_loss_weights': np.ones(shape, np.int32)}
  state = trainer.init_state()
  device = trainer.partitioner.mesh.devices.flat[0]

  def on_device(tree):
    return sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree)
               for s in x.addressable_shards if s.device == device)

  assert on_device(state.params) == step.params_bytes
  assert on_device(state.opt_state) == step.opt_state_bytes
  global_batch = trainer.partitioner.shard_batch(batch)
  # The compiled program's arguments are the state and this device's batch rows (XLA leaves
  # out the few bytes of inputs the step never reads).
  arguments = on_device((state.step, state.params, state.opt_state, global_batch))
  assert 0.999 * arguments <= step.memory.argument <= arguments
  state, metrics = trainer.train_step(state, global_batch)
  assert np.isfinite(float(metrics['loss']))
  assert on_device((state.params, state.opt_state)) == step.params_bytes + step.opt_state_bytes
  assert step.peak >= step.memory.argument and step.memory.temp > 0
  assert step.flops and step.flops > 0


def _padir_step(**kwargs):
  spec = _spec(objective='padir', **kwargs)
  model = plan.build_model(spec)
  return model, plan.plan_trainer(plan.make_trainer(model, spec, spec.mesh, spec.batch_size))


def test_padir_stages_all_reduce_each_gradient_once(dp_run):
  # Data parallel: the gradients of the 2-stage PaDIR step cross the devices once, as in a
  # 1-stage step and in AR (XLA:CPU all-reduces each stage's partial gradient separately when
  # the stages' backward passes are separate matmuls).
  _, one = _padir_step(stages=1)
  _, joint = _padir_step(stages=2, model_overrides={'joint_stage_gradients': True})
  reduced = lambda step: step.collectives['all-reduce'].bytes
  assert abs(reduced(joint) - reduced(one)) <= 0.01 * one.params_bytes
  _, _, _, ar = dp_run
  extra_params = one.params_bytes - ar.params_bytes  # PaDIR's length head
  assert abs(reduced(joint) - reduced(ar) - extra_params) <= 0.01 * ar.params_bytes


def test_joint_stage_gradients_keep_the_loss():
  spec = _spec(objective='padir', stages=3, mesh=None, num_devices=1, dtype='float32')
  model = plan.build_model(spec)
  joint = plan.build_model(dataclasses.replace(
      spec, model_overrides={'joint_stage_gradients': True}))
  shape = (4, spec.target_length)
  rng = np.random.default_rng(0)
  real = model.special_ids.num_real_pieces
  batch = {'encoder_input_tokens': rng.integers(3, real, shape).astype(np.int32),
           'decoder_target_tokens': rng.integers(3, real, shape).astype(np.int32)}
  params = model.get_initial_variables(jax.random.key(0), {k: v.shape for k, v in
                                                           batch.items()}).params
  # Without dropout (rng None: a fixed corruption key) both give the same loss and gradient.
  (loss, metrics), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, None)
  (loss_j, metrics_j), grads_j = jax.value_and_grad(joint.loss_fn, has_aux=True)(
      params, batch, None)
  np.testing.assert_allclose(loss_j, loss, rtol=1e-5)
  for s in range(3):
    np.testing.assert_allclose(metrics_j[f'loss_stage_{s}'], metrics[f'loss_stage_{s}'],
                               rtol=1e-5)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         grads_j, grads)


def test_auto_mesh_takes_data_parallel_when_it_fits(dp_run, monkeypatch):
  spec, model, _, step = dp_run
  monkeypatch.setattr(plan, 'plan_train_step', lambda *a, **k: step)
  chosen, tried = plan.auto_mesh(model, plan.PlanSpec(**{**spec.__dict__, 'mesh': None}),
                                 log=lambda _: None)
  assert chosen.mesh == (8, 1, 1) and tried[0]['mesh'] == [8, 1, 1]


def test_auto_mesh_skips_meshes_whose_state_cannot_fit(dp_run):
  spec, model, _, _ = dp_run
  tiny_device = plan.PlanSpec(**{**spec.__dict__, 'mesh': None, 'device_memory_gib': 1e-6})
  with pytest.raises(ValueError, match='No mesh of 8 devices'):
    plan.auto_mesh(model, tiny_device, log=lambda _: None)


def test_mesh_candidates_order(dp_run):
  spec, model, _, _ = dp_run
  meshes = plan.mesh_candidates(spec, model)
  assert meshes[:4] == [(8, 1, 1), (4, 2, 1), (2, 4, 1), (1, 8, 1)]
  assert meshes[4] == (4, 1, 2)  # tensor 2 only after every tensor-1 mesh
  assert all(np.prod(m) == 8 for m in meshes)


def test_decode_step_compiles_on_the_mesh():
  spec = _spec(objective='padir', stages=2, decode_batch_size=8, decode_iterations=2)
  step = plan.plan_decode_step(plan.build_model(spec), spec, (4, 2, 1))
  assert step.mesh == (4, 2, 1) and step.batch_size == 8
  assert step.memory.temp > 0 and step.params_bytes > 0


def _step(batch, peak):
  mem = hlo_stats.MemoryStats(argument=peak, output=0, alias=0, temp=0, generated_code=0)
  return plan.StepPlan((8, 1, 1), batch, 0, 0, mem, None, {}, 0.0)


def test_largest_batch_linear_fit():
  # peak = 100 + 10 x batch; budget 1000 -> 90, rounded down to a multiple of 8.
  assert plan.largest_batch(_step(16, 260), _step(32, 420), 1000, 8) == 88
  assert plan.largest_batch(_step(16, 260), _step(32, 420), 50, 8) == 0
  assert plan.second_batch(512, 256) == 256 and plan.second_batch(256, 256) == 512


@pytest.mark.parametrize('kwargs, message', [
    (dict(size='huge'), "Unknown size 'huge'"),
    (dict(mesh=(3, 1, 1)), 'has 3 devices but 8'),
    (dict(objective='mlm'), "Unknown objective 'mlm'"),
    (dict(device='tpu9'), "Unknown device 'tpu9'"),
    (dict(headroom=1.5), 'headroom'),
])
def test_bad_specs(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _spec(**kwargs).validate()


def test_command_line_errors_and_registration(capsys):
  assert 'plan' in cli.COMMANDS
  with pytest.raises(ValueError, match='must be "auto" or data,fsdp,tensor'):
    plan_cli.parse_mesh('8,1')
  with pytest.raises(SystemExit):
    plan_cli.main(['--target=v9-8'])
  assert "Unknown target 'v9-8'" in capsys.readouterr().err
  env = plan_cli.subprocess_env(32)
  assert env['XLA_FLAGS'].endswith('--xla_force_host_platform_device_count=32')
  assert plan.gin_binding((16, 2, 1)) == \
      '--gin.padir.partitioning.Partitioner.mesh_shape="(16, 2, 1)"'


def test_scale_table_renders_cells(dp_run):
  spec, _, _, step = dp_run
  cell = {'spec': spec.__dict__, 'num_params': 1e6, 'jax_version': jax.__version__,
          'train': step.to_json(), 'fits': True, 'largest_batch': 64}
  failed = {'error': 'not compiled within 10 s on this machine'}
  args = argparse.Namespace(batch_size=16, input_length=8, target_length=8, dtype='bfloat16',
                            stages=2, mesh='auto', headroom=0.9, decode_iterations=4)
  text = scale.render([('tiny', 'ar', 'v5e-64', cell), ('xl', 'ar', 'v5e-256', failed)], args,
                      'python -m padir.bench scale')
  assert '| tiny | ar | v5e-64 (64 x 16 GiB) | (8, 1, 1) |' in text
  assert 'all-reduce 3' in text or 'all-reduce' in text
  assert 'not compiled within 10 s' in text
  # A scanned cell is marked and shows the matmul FLOPs (loop trip counts included).
  scanned = dict(cell, scan_layers=True, train=dict(step.to_json(), matmul_flops=7e12))
  args.scan_sizes = 'tiny'
  check = scale.scan_check_text(cell, scanned, 'tiny ar v5e-64')
  text = scale.render([('tiny', 'ar', 'v5e-64', scanned)], args, 'python -m padir.bench scale',
                      check)
  assert '| tiny ‡ | ar | v5e-64 (64 x 16 GiB) |' in text and '| 7.0 |' in text
  assert 'peak {0:.2f} against {0:.2f} GiB per device (+0%'.format(step.peak / 2**30) in text


def test_scale_largest_batch_from_data_parallel_rows():
  def cell(devices, peak):
    train = {'mesh': [devices, 1, 1], 'batch_size': 512, 'peak_bytes': peak}
    return {'train': train, 'budget_bytes': 1000}
  # peak = 100 + 10 x (examples per device): 16/device -> 260, 8/device -> 180.
  cells = [('base', 'ar', 'v4-32', cell(32, 260)), ('base', 'ar', 'v5e-64', cell(64, 180))]
  fixed, slope = scale.data_parallel_fits(cells)[('base', 'ar')]
  assert (round(fixed), round(slope)) == (100, 10)
  fits = scale.data_parallel_fits(cells)
  assert scale._largest_text('base', 'ar', 'v4-32', cells[0][3], fits) == '2,880 †'  # 90 x 32


def test_defaults_from_a_gin_experiment():
  defaults = plan_cli.defaults_from_gin(
      ['experiments/wmt14_ende_ar.gin'],
      ["padir.builders.network_config.dtype = 'bfloat16'", 'BATCH_SIZE = 256'])
  assert defaults['objective'] == 'ar' and defaults['size'] == 'base'
  assert defaults['batch_size'] == 256 and defaults['dtype'] == 'bfloat16'
  assert (defaults['input_length'], defaults['target_length']) == (128, 128)
  assert 'mesh' not in defaults  # the trainer default (-1, 1, 1): the plan picks one
