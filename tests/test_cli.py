"""Tests for the padir console script and its demo command."""

from padir import cli, demo


def test_help_lists_only_installed_commands(capsys):
  assert cli.main(['--help']) == 0
  out = capsys.readouterr().out
  assert 'demo' in out
  for name, (module, _) in cli.COMMANDS.items():
    installed = name in cli.available_commands()
    assert (f'  {name} ' in out) == installed, name


def test_unknown_command_is_reported(capsys):
  assert cli.main(['trian']) == 2
  assert "unknown command 'trian'" in capsys.readouterr().err


def test_demo_runs_both_decoders(capsys):
  timings = demo.run(num_sentences=2, preset='tiny', max_length=32)
  assert set(timings) == {'causal', 'bidirectional'}
  assert all(t > 0 for t in timings.values())
  out = capsys.readouterr().out
  assert 'length head (untrained)' in out and 'logits (2, 32, 8192)' in out
