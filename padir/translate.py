r"""Translates sentences with a trained model: ``padir translate --model_dir=DIR``.

  echo "En el principio creó Dios los cielos y la tierra." | \
    padir translate --model_dir=padir_quickstart/student_distilled
  padir translate --model_dir=DIR --input_file=sources.txt --output_file=out.txt
  padir translate --model_dir=DIR --iterations=2 --length_beam=1 --show_refinement < in.txt

Reads one sentence per line from stdin (or ``--input_file``) and writes one translation per
line, in order, to stdout (or ``--output_file``); an empty line gets an empty line. Lines are
split at ``\n`` only (`padir.data.textfile`). Works with any model dir that ``padir train`` or
``padir quickstart`` wrote, AR or PaDIR: the dir's config.gin describes the model and its
decoding defaults (`padir.interactive`). Decoding flags override them: ``--iterations``,
``--length_beam``, ``--prune_after``, ``--rule``, ``--no_rerank``, ``--keep_repeats`` and
``--allow_repeats`` (PaDIR), ``--beam_size`` (AR: beam search), ``--no_repeat_ngram`` (AR:
no n-gram twice in an output), and any ``--gin.NAME=VALUE`` binding (applied after the saved
config). ``--show_refinement`` prints each pass of a PaDIR decode to stderr, ``[MASK]`` where a
position is re-masked.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence, TextIO

from padir import errors
from padir import gin_utils
from padir.data import textfile


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='padir translate', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model_dir', required=True, help='a padir train / quickstart model dir')
  parser.add_argument('--input_file', default=None, help='UTF-8 text, one sentence per line '
                      '(default: stdin)')
  parser.add_argument('--output_file', default=None, help='default: stdout')
  parser.add_argument('--checkpoint_step', type=int, default=None,
                      help='a checkpoint step (default: the newest)')
  parser.add_argument('--iterations', type=int, default=None, help='PaDIR decoder passes')
  parser.add_argument('--length_beam', type=int, default=None,
                      help='PaDIR: lengths tried around the predicted one (odd)')
  parser.add_argument('--length_offset', type=int, default=None,
                      help='PaDIR: tokens added to each predicted length (0: as predicted)')
  parser.add_argument('--prune_after', type=int, default=None,
                      help='PaDIR: after this pass only the best length candidate goes on '
                      '(0: every candidate runs every pass)')
  parser.add_argument('--rule', default=None,
                      help="PaDIR remasking rule (e.g. 'mask_predict', 'keep_all')")
  parser.add_argument('--no_rerank', action='store_true',
                      help="PaDIR: no AR teacher in the decoder (no re-ranking of the length "
                      "candidates, no teacher fixes), even when the dir's decoding.json names a "
                      'rerank_model_dir')
  parser.add_argument('--teacher_fix_threshold', type=float, default=None,
                      help='PaDIR with an AR re-ranker: it replaces output tokens where it '
                      'proposes another piece with a probability above this (0: off)')
  parser.add_argument('--teacher_fix_rounds', type=int, default=None,
                      help='PaDIR with the teacher fixing tokens: rounds of fixes, each after '
                      'the first one more teacher pass over the output (1: one round)')
  parser.add_argument('--keep_repeats', action='store_true',
                      help="PaDIR: do not merge adjacent repeated tokens, even when the dir's "
                      'decoding.json asks for it (collapse_repeats)')
  parser.add_argument('--allow_repeats', action='store_true',
                      help="PaDIR: let neighbouring positions propose the same token in a pass, "
                      "even when the dir's decoding.json avoids it (avoid_repeats)")
  parser.add_argument('--beam_size', type=int, default=None,
                      help='AR: beam search with this many beams (1: greedy)')
  parser.add_argument('--no_repeat_ngram', type=int, default=None,
                      help='AR: no n-gram of pieces occurs twice in an output (e.g. 4; 0: off; '
                      'ARConfig.no_repeat_ngram)')
  parser.add_argument('--batch_size', type=int, default=64, help='sentences per decoder call')
  parser.add_argument('--show_refinement', action='store_true',
                      help='PaDIR: print every pass of each decode to stderr')
  parser.add_argument(errors.DEBUG_FLAG, action='store_true',
                      help=f'show full tracebacks of errors (or {errors.DEBUG_ENV}=1)')
  return parser


def _read_input(path: str | None, stdin: TextIO) -> list[str]:
  if path is not None:
    return textfile.read_lines(path)
  raw = stdin.buffer.read() if hasattr(stdin, 'buffer') else stdin.read().encode('utf-8')
  return [text for _, text in textfile.iter_lines(raw.splitlines(keepends=True), '<stdin>')]


def decoding_options(flags: argparse.Namespace, is_padir: bool) -> dict[str, Any]:
  """The decoding overrides the flags ask for; PaDIR-only and AR-only flags are checked."""
  padir_only = {'iterations': flags.iterations, 'length_beam': flags.length_beam,
                'prune_after': flags.prune_after, 'length_offset': flags.length_offset,
                'rule': flags.rule, 'teacher_fix_threshold': flags.teacher_fix_threshold,
                'teacher_fix_rounds': flags.teacher_fix_rounds}
  if not is_padir:
    given = [f'--{k}' for k, v in padir_only.items() if v is not None]
    given += [f'--{k}' for k in ('show_refinement', 'no_rerank', 'keep_repeats',
                                 'allow_repeats') if getattr(flags, k)]
    if given:
      raise ValueError(f'{", ".join(given)}: PaDIR option(s), but {flags.model_dir} is an AR '
                       'model (use --beam_size, or --gin.padir.ar_decoding.ARConfig.* bindings).')
    options = {}
    if flags.beam_size is not None:
      options.update(method='beam' if flags.beam_size > 1 else 'greedy',
                     beam_size=flags.beam_size)
    if flags.no_repeat_ngram is not None:
      from padir.ar_decoding import ARConfig  # pylint: disable=g-import-not-at-top
      ARConfig(no_repeat_ngram=flags.no_repeat_ngram)  # its check, before any input is read
      options['no_repeat_ngram'] = flags.no_repeat_ngram
    return options
  given = [f'--{k}' for k in ('beam_size', 'no_repeat_ngram') if getattr(flags, k) is not None]
  if given:
    raise ValueError(f'{", ".join(given)}: AR option(s), but {flags.model_dir} is a PaDIR model '
                     '(use --length_beam and --iterations; --allow_repeats / --keep_repeats '
                     'control its repeats).')
  options = {k: v for k, v in padir_only.items() if v is not None}
  if flags.no_rerank:
    options['rerank'] = False
  if flags.keep_repeats:
    options['collapse_repeats'] = False
  if flags.allow_repeats:
    options['avoid_repeats'] = False
  return options


def run(argv: Sequence[str], stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr) -> int:
  """The command's body (see the module doc); returns the exit code."""
  from padir import interactive  # pylint: disable=g-import-not-at-top
  gin_args = gin_utils.split_gin_args(argv)
  if gin_args.gin_files:
    raise ValueError('padir translate reads the model dir\'s own config.gin; pass changes as '
                     '--gin.NAME=VALUE bindings instead of --gin_file.')
  flags = _parser().parse_args(gin_args.rest)
  if flags.input_file is not None and not os.path.isfile(flags.input_file):
    raise ValueError(f'--input_file {flags.input_file}: no such file.')
  model = interactive.load(flags.model_dir, checkpoint_step=flags.checkpoint_step,
                           gin_bindings=gin_args.gin_bindings, batch_size=flags.batch_size)
  options = decoding_options(flags, model.is_padir)
  if flags.input_file is None and stdin.isatty():
    print('Reading sentences from stdin, one per line; end with Ctrl-D.', file=stderr)
  lines = _read_input(flags.input_file, stdin)
  if flags.show_refinement:
    texts = [line for line in lines if line.strip()]
    refinements = iter(model.refine(texts, **options) if texts else [])
    outputs = []
    for line in lines:
      if not line.strip():
        outputs.append('')
        continue
      r = next(refinements)
      print(f'source: {r.source}', file=stderr)
      for k, text in enumerate(r.passes, 1):
        print(f'  pass {k}: {text}', file=stderr)
      outputs.append(r.translation)
  else:
    outputs = model.translate(lines, **options)
  text = ''.join(' '.join(o.split()) + '\n' for o in outputs)
  if flags.output_file:
    with open(flags.output_file, 'w', encoding='utf-8') as f:
      f.write(text)
  else:
    stdout.write(text)
    stdout.flush()
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m padir.translate`` / ``padir translate``."""
  argv = errors.pop_debug_flag(sys.argv[1:] if argv is None else argv)
  if any(a in ('-h', '--help') for a in argv):
    _parser().print_help()
    return 0
  return errors.call(lambda: run(argv), 'padir translate')


if __name__ == '__main__':
  sys.exit(main())
