"""Tests for padir.quickstart_train: what a training stage records and shows."""

import gin

from padir import quickstart_train


def test_bound_value_reads_what_a_stage_trains_with():
  from padir import optimizers  # pylint: disable=g-import-not-at-top,unused-import
  gin.clear_config()
  assert quickstart_train.bound_value(quickstart_train.COOLDOWN_BINDING) is None  # unbound
  gin.parse_config(['COOLDOWN_STEPS = 100',
                    'padir.optimizers.linear_cooldown.cooldown_steps = %COOLDOWN_STEPS'])
  assert quickstart_train.bound_value(quickstart_train.COOLDOWN_BINDING) == 100
  gin.parse_config('COOLDOWN_STEPS = 250')  # a later macro value wins, as in a stage's parse
  assert quickstart_train.bound_value(quickstart_train.COOLDOWN_BINDING) == 250
  gin.parse_config('padir.optimizers.linear_cooldown.cooldown_steps = 7')
  assert quickstart_train.bound_value(quickstart_train.COOLDOWN_BINDING) == 7
  # A configurable (not a macro) has no value to report.
  gin.parse_config('padir.optimizers.linear_cooldown.schedule = '
                   '@padir.optimizers.rsqrt_schedule()')
  assert quickstart_train.bound_value('padir.optimizers.linear_cooldown.schedule') is None


def test_train_display_drives_the_bar_from_the_step_callback():
  import io  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  out, said = io.StringIO(), []
  with tqdm(total=10, file=out, mininterval=0) as bar:
    display = quickstart_train.TrainDisplay(bar, True, said.append)
    display.on_step(1, None)
    display.on_step(2, {'loss': 3.25, 'accuracy': 0.5, 'learning_rate': 0.01})
    display.print('step 2/10 | loss 3.25 | acc 0.5 | 1.00 steps/s | 10 tok/s | ETA 8s')
    display.print('Compiled the train step in 1.0s')
    assert bar.n == 2
    assert bar.postfix == 'loss 3.25 | acc 0.5'
  assert said == ['Compiled the train step in 1.0s']  # the step line is on the bar
  plain = []
  display = quickstart_train.TrainDisplay(None, False, plain.append)
  display.on_step(3, {'loss': 1.0})  # no bar: nothing to update
  display.print('step 3/10 | loss 1.0')
  assert plain == ['step 3/10 | loss 1.0']
