"""Gin plumbing for padir's entry points: flags, shipped gin files, required macros, provenance.

T5X-style command lines::

  python -m padir.train --gin_file=gin/experiments/bible_es_en_padir.gin \
      --gin.MODEL_DIR="'/tmp/run'" --gin.TRAIN_STEPS=1000

* ``--gin_file=F`` (repeatable; later files override earlier ones). ``F`` is a path, or a name
  relative to the shipped gin directory, with or without its ``gin/`` prefix
  (``gin/models/small.gin`` or ``models/small.gin``), from any working directory. Includes
  inside gin files resolve relative to the shipped directory too (the shipped files include
  ``models/small.gin`` etc.), so no search path is ever needed; ``--gin_search_paths=A,B`` adds
  more.
* ``--gin_bindings='NAME = VALUE'`` (repeatable) and the sugar ``--gin.NAME=VALUE``, which is
  rewritten to the binding ``NAME = VALUE`` (strings need inner quotes: ``--gin.X="'text'"``).

After parsing, every ``%gin.REQUIRED`` value still unset is reported in ONE error that lists each
missing macro with an example flag (:func:`check_required`), and a command-line binding that
the run never uses is an error naming it and the closest real names
(:func:`check_bindings_used`): a macro nothing refers to (``--gin.TRAIN_STEP=2``) or a scope
nothing enters (``--gin.trian/padir.datasets.DatasetConfig.batch_size=8``). A binding that
cannot be parsed is reported with the binding and the usual fix (inner quotes for strings).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import os
import pathlib
import re
import tokenize
from typing import Any, Callable, Iterable, Sequence

import gin
from gin import config as gin_config
from gin import config_parser

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def _find_gin_dir() -> pathlib.Path:
  """The shipped gin files: the repository's top-level ``gin/`` (a source checkout or an
  editable install) or the copy a wheel installs as ``padir/_shipped/gin`` (see setup.py)."""
  for candidate in (PACKAGE_DIR.parent / 'gin', PACKAGE_DIR / '_shipped' / 'gin'):
    if (candidate / 'objectives').is_dir() and (candidate / 'runs').is_dir():
      return candidate
  raise ImportError(f'padir is installed without its gin files (looked in {PACKAGE_DIR.parent}/gin '
                    f'and {PACKAGE_DIR}/_shipped/gin); reinstall it with pip install -e . or from '
                    'a wheel.')


GIN_DIR = _find_gin_dir()
# Names may start with these prefixes ('gin/models/small.gin'; 'padir/gin/...' from padir 0.1
# command lines); they are stripped to get a name relative to GIN_DIR.
_GIN_PREFIXES = ('gin/', 'padir/gin/')

# Example values of the documented macros, for the "missing macro" message.
EXAMPLE_FLAGS = {
    'MODEL_DIR': '--gin.MODEL_DIR="\'/tmp/padir_model\'"',
    'TRAIN_STEPS': '--gin.TRAIN_STEPS=1000',
    'BATCH_SIZE': '--gin.BATCH_SIZE=64',
    'MIXTURE_OR_TASK_NAME': ('--gin.MIXTURE_OR_TASK_NAME="\'bible_es_en\'" (a seqio task) or '
                             '"\'/data/bible_es_en_arrays\'" (arrays from python -m '
                             'padir.data.export)'),
    'TASK_FEATURE_LENGTHS': '--gin.TASK_FEATURE_LENGTHS="{\'inputs\': 128, \'targets\': 128}"',
    'CHECKPOINT_PATH': '--gin.CHECKPOINT_PATH="\'/tmp/padir_model\'" (a model dir or one step dir)',
    'INFER_OUTPUT_DIR': '--gin.INFER_OUTPUT_DIR="\'/tmp/padir_infer\'"',
    'VOCABULARY': '--gin.VOCABULARY="\'bible\'" (or "\'byte\'", "\'/path/spm.model\'")',
    'EVAL_SPLIT': '--gin.EVAL_SPLIT="\'validation\'"',
    'INFER_INPUT_FILE': '--gin.INFER_INPUT_FILE="\'/tmp/sources.txt\'"',
    'INIT_FROM': ('--gin.INIT_FROM="\'/data/t5-v1_1-base\'" (a Hugging Face T5 directory or a '
                  'padir MODEL_DIR; None starts from random weights)'),
}


class GinFlagError(ValueError):
  """A malformed gin flag or a gin file that cannot be found."""


@dataclasses.dataclass
class GinArgs:
  """Gin-related command-line arguments, after :func:`split_gin_args`.

  Attributes:
    gin_files: files in command-line order.
    gin_bindings: bindings in command-line order (``--gin.X=V`` became ``X = V``).
    gin_search_paths: extra search paths.
    rest: the remaining (non-gin) arguments.
  """
  gin_files: list[str] = dataclasses.field(default_factory=list)
  gin_bindings: list[str] = dataclasses.field(default_factory=list)
  gin_search_paths: list[str] = dataclasses.field(default_factory=list)
  rest: list[str] = dataclasses.field(default_factory=list)


def _flag_value(args: Sequence[str], i: int, name: str) -> tuple[str, int]:
  """Value of ``--name=V`` or ``--name V`` at args[i]; returns (value, next index)."""
  arg = args[i]
  prefix = f'--{name}'
  if arg.startswith(prefix + '='):
    return arg[len(prefix) + 1:], i + 1
  if i + 1 >= len(args):
    raise GinFlagError(f'{prefix} needs a value.')
  return args[i + 1], i + 2


def split_gin_args(argv: Sequence[str]) -> GinArgs:
  """Separates gin flags from the other flags and rewrites ``--gin.NAME=VALUE``.

  Args:
    argv: command-line arguments without the program name.

  Returns:
    GinArgs.

  Raises:
    GinFlagError: for ``--gin.NAME`` without ``=VALUE``.
  """
  out = GinArgs()
  i = 0
  args = list(argv)
  while i < len(args):
    arg = args[i]
    if arg.startswith('--gin.'):
      body = arg[len('--gin.'):]
      name, sep, value = body.partition('=')
      if not sep or not name:
        raise GinFlagError(f'{arg!r}: write --gin.NAME=VALUE (strings need inner quotes, e.g. '
                           '--gin.MODEL_DIR="\'/tmp/x\'").')
      out.gin_bindings.append(f'{name} = {value}')
      i += 1
    elif arg == '--gin_file' or arg.startswith('--gin_file='):
      value, i = _flag_value(args, i, 'gin_file')
      out.gin_files.append(value)
    elif arg == '--gin_bindings' or arg.startswith('--gin_bindings='):
      value, i = _flag_value(args, i, 'gin_bindings')
      out.gin_bindings.append(value)
    elif arg == '--gin_search_paths' or arg.startswith('--gin_search_paths='):
      value, i = _flag_value(args, i, 'gin_search_paths')
      out.gin_search_paths.extend(p for p in value.split(',') if p)
    else:
      out.rest.append(arg)
      i += 1
  return out


def resolve_gin_file(name: str, search_paths: Iterable[str] = ()) -> str:
  """The path of a gin file given as a path, a package-relative or a gin-dir-relative name.

  Raises:
    GinFlagError: naming every place looked at.
  """
  candidates = [pathlib.Path(name)]
  for base in (*map(pathlib.Path, search_paths), GIN_DIR):
    candidates.append(base / name)
  for prefix in _GIN_PREFIXES:
    if name.startswith(prefix):
      candidates.append(GIN_DIR / name[len(prefix):])
  if not name.endswith('.gin'):
    candidates += [c.with_name(c.name + '.gin') for c in list(candidates)]
  for c in candidates:
    if c.is_file():
      return str(c)
  shipped = sorted(str(p.relative_to(GIN_DIR)) for p in GIN_DIR.rglob('*.gin'))
  raise GinFlagError(
      f'Gin file {name!r} not found (looked at: {", ".join(str(c) for c in candidates)}). '
      f'Shipped gin files: {", ".join(shipped)}.')


def _register_search_paths(extra: Iterable[str]) -> None:
  # GIN_DIR.parent makes includes of 'gin/models/small.gin' resolve as well as 'models/small.gin'.
  for path in (*extra, str(GIN_DIR), str(GIN_DIR.parent)):
    if path not in gin_config._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(path)


# Every padir module that registers configurables. A saved config (``MODEL_DIR/config.gin``)
# names configurables of whichever command wrote it (the quickstart's QuickstartConfig, say), so
# every command imports them all before parsing: any run's config.gin parses in any command.
CONFIGURABLE_MODULES = (
    'padir.ar_decoding', 'padir.builders', 'padir.checkpoints', 'padir.datasets',
    'padir.decoding', 'padir.distill', 'padir.eval', 'padir.infer', 'padir.models',
    'padir.objectives', 'padir.optimizers', 'padir.partitioning', 'padir.quickstart',
    'padir.refine_decoding', 'padir.remasking', 'padir.train')


def import_configurables() -> None:
  """Imports :data:`CONFIGURABLE_MODULES` (cheap after the first call)."""
  import importlib  # pylint: disable=g-import-not-at-top
  for name in CONFIGURABLE_MODULES:
    importlib.import_module(name)


class _IncludeProbeFilter(logging.Filter):
  """Drops gin's "Path not found: X" log lines: gin logs one at ERROR level for every search
  path an ``include`` is not under before the one it is found under. A file found nowhere is
  still an error (gin raises, naming it)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith('Path not found:')


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              search_paths: Sequence[str] = (), finalize: bool = True,
              required: bool = True, strict_bindings: bool = False) -> None:
  """Clears gin, then parses files and bindings (later ones override earlier ones).

  Args:
    gin_files: file names (see :func:`resolve_gin_file`).
    gin_bindings: binding strings such as ``"MODEL_DIR = '/x'"``.
    search_paths: extra gin search paths.
    finalize: lock the config after parsing.
    required: the files are a run's whole config: fail with one message listing every
      ``%gin.REQUIRED`` value left unset, and on a binding the config never uses
      (:func:`check_bindings_used`).
    strict_bindings: a binding is used only when this config uses it; otherwise a name some
      shipped gin file uses passes too (for commands that parse one config per stage).

  Raises:
    GinFlagError: for a gin file that cannot be found, a binding that cannot be parsed or is
      never used, or an unknown configurable or parameter (with the closest names).
    ValueError: missing required values (:func:`check_required`).
  """
  import_configurables()
  gin.clear_config(clear_constants=False)
  _register_search_paths(search_paths)
  files = [resolve_gin_file(f, search_paths) for f in gin_files]
  statements = [_parse_binding(b) for b in gin_bindings]
  probe_filter = _IncludeProbeFilter()
  logging.getLogger().addFilter(probe_filter)
  try:
    gin.parse_config_files_and_bindings(files, list(gin_bindings), finalize_config=False,
                                        skip_unknown=False)
  except ValueError as err:
    raise _with_suggestions(err) from None
  finally:
    logging.getLogger().removeFilter(probe_filter)
  if required:
    check_required()
    check_bindings_used([s for group in statements for s in group], strict=strict_bindings)
  if finalize:
    gin.finalize()


_VALUE_HINT = ('strings need inner quotes (--gin.MODEL_DIR="\'/tmp/run\'"); numbers, lists and '
               'dicts are Python literals')


def _parse_binding(binding: str) -> list[Any]:
  """The statements of one binding string; a parse error names the binding and the fix.

  Raises:
    GinFlagError: the binding is not valid gin.
  """
  text = ' '.join(binding.split())
  try:
    return list(config_parser.ConfigParser(binding, gin_config.ParserDelegate(skip_unknown=True)))
  except tokenize.TokenError:
    raise GinFlagError(f'Cannot parse the gin binding "{text}": unbalanced brackets or '
                       'quotes.') from None
  except SyntaxError as err:
    token = re.search(r"Failed to parse token '(.*)'", str(err.msg))
    what = (f'{token.group(1)} is not a value' if token
            else str(err.msg).splitlines()[0].rstrip('.').lower())
    raise GinFlagError(f'Cannot parse the gin binding "{text}": {what}; {_VALUE_HINT}.') from None


def _suggest(name: str, candidates: Iterable[str]) -> str:
  """' (did you mean A or B?)' with the closest candidates, or ''."""
  close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
  return f' (did you mean {" or ".join(close)}?)' if close else ''


def _with_suggestions(err: ValueError) -> ValueError:
  """Gin's unknown-configurable / unknown-parameter error, as one line with close names."""
  message = str(err)
  first = message.splitlines()[0] if message else ''
  unknown = re.match(r"No configurable matching '([^']+)'", first)
  if unknown:
    names = [k for k, _ in gin_config._REGISTRY.items()]  # pylint: disable=protected-access
    return GinFlagError(first.rstrip('.') + _suggest(unknown.group(1), names) + '.')
  param = re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", first)
  if param:
    configurable = gin_config._REGISTRY.get_match(param.group(1))  # pylint: disable=protected-access
    params = _parameter_names(configurable.wrapped) if configurable is not None else []
    return GinFlagError(first.rstrip('.') + _suggest(param.group(2), params) + '.')
  return err


def _parameter_names(fn: Any) -> list[str]:
  import inspect  # pylint: disable=g-import-not-at-top
  target = fn.__init__ if isinstance(fn, type) else fn
  try:
    return [p for p in inspect.signature(target).parameters if p != 'self']
  except (TypeError, ValueError):
    return []


def _references() -> tuple[set[str], set[str]]:
  """(macro names, scope names) the parsed config refers to (``%NAME``, ``@scope/...``)."""
  macros: set[str] = set()
  scopes: set[str] = set()

  def visit(value: Any) -> None:
    if isinstance(value, gin_config.ConfigurableReference):
      if value.selector == 'gin.macro':
        macros.add('/'.join(value.scopes))
      else:
        scopes.update(value.scopes)
    elif isinstance(value, (list, tuple, set, frozenset)):
      for v in value:
        visit(v)
    elif isinstance(value, dict):
      for k, v in value.items():
        visit(k)
        visit(v)

  for params in gin_config._CONFIG.values():  # pylint: disable=protected-access
    for value in params.values():
      visit(value)
  return macros, scopes


@functools.lru_cache(maxsize=1)
def _shipped_references() -> tuple[frozenset[str], frozenset[str]]:
  """(macro names, scope names) any shipped gin file refers to."""
  macros: set[str] = set()
  scopes: set[str] = set()
  for path in GIN_DIR.rglob('*.gin'):
    text = path.read_text(encoding='utf-8')
    macros.update(re.findall(r'%([A-Za-z_][\w.]*)', text))
    for scoped in re.findall(r'@([\w./]+)/[\w.]+', text):
      scopes.update(scoped.split('/'))
  return frozenset(macros), frozenset(scopes)


def check_command_line_bindings(gin_bindings: Sequence[str], strict: bool = False) -> None:
  """:func:`check_bindings_used` for binding strings, against the config parsed last.

  For commands that parse one config per stage (the quickstart): call it once after parsing
  their own gin files, with ``strict=False``, to refuse a typo before the first stage runs.

  Raises:
    GinFlagError: a binding that cannot be parsed or is never used.
  """
  check_bindings_used([s for b in gin_bindings for s in _parse_binding(b)], strict=strict)


def check_bindings_used(statements: Sequence[Any], strict: bool = True) -> None:
  """Fails on command-line bindings the parsed config never uses (typos).

  Args:
    statements: gin statements of the command-line bindings (``_parse_binding``).
    strict: only this config's references count; otherwise those of shipped gin files too.

  Raises:
    GinFlagError: one message naming every unused macro or scope and the closest real names.
  """
  macros, scopes = _references()
  if not strict:
    shipped_macros, shipped_scopes = _shipped_references()
    macros |= shipped_macros
    scopes |= shipped_scopes
  problems = []
  for statement in statements:
    if not isinstance(statement, config_parser.BindingStatement):
      continue
    if not statement.arg_name and '.' not in statement.selector:  # NAME = value: a macro
      name = '/'.join(filter(None, (statement.scope, statement.selector)))
      if name not in macros:
        problems.append(f'--gin.{name} is never used: no gin file refers to %{name}'
                        f'{_suggest(name, macros)}')
      continue
    for scope in filter(None, statement.scope.split('/')):
      if scope not in scopes:
        problems.append(f'--gin.{statement.scope}/{statement.selector}.{statement.arg_name}: '
                        f'the scope {scope!r} is never used{_suggest(scope, scopes)}')
  if problems:
    raise GinFlagError('; '.join(problems) + '. Fix the name or drop the flag.')


def _is_required(value: Any) -> bool:
  return (isinstance(value, gin_config.ConfigurableReference) and
          value.scoped_selector == 'gin.REQUIRED/gin.constant')


def missing_required() -> list[tuple[str, str]]:
  """Every ``%gin.REQUIRED`` value left in the parsed config: (name, example flag) pairs.

  Macros are reported by their name (``MODEL_DIR``); parameters bound to ``%gin.REQUIRED``
  directly by ``selector.param``.
  """
  missing = []
  for (scope, selector), params in gin_config._CONFIG.items():  # pylint: disable=protected-access
    for param, value in params.items():
      if not _is_required(value):
        continue
      if selector == 'gin.macro':
        name = scope
        example = EXAMPLE_FLAGS.get(name, f'--gin.{name}=VALUE')
      else:
        name = f'{scope + "/" if scope else ""}{selector}.{param}'
        example = f'--gin.{name}=VALUE'
      missing.append((name, example))
  return sorted(set(missing))


def check_required() -> None:
  """Raises one ValueError listing every missing required macro with an example flag."""
  missing = missing_required()
  if missing:
    lines = '\n'.join(f'  {name:<22} e.g. {example}' for name, example in missing)
    raise ValueError(f'{len(missing)} required gin value(s) not set:\n{lines}\n'
                     'Set them with --gin.NAME=VALUE flags or in a gin file.')


def _register(register: Callable[[], Any]) -> Any:
  """Runs a gin registration; safe on re-import and after the config was locked.

  A module imported lazily (after parsing) may still register its configurables: the config
  is unlocked for the registration only. Registering a name again (re-import) replaces it.
  """
  if gin.config_is_locked():
    with gin.unlock_config():
      return _register(register)
  try:
    return register()
  except ValueError as err:
    if 'already exists' not in str(err):
      raise
    gin.enter_interactive_mode()
    try:
      return register()
    finally:
      gin.exit_interactive_mode()


def configurable(fn_or_cls: Callable[..., Any], module: str | None = None) -> Callable[..., Any]:
  """``gin.configurable`` under the module-qualified name (see :func:`_register`)."""
  module = module or fn_or_cls.__module__
  return _register(lambda: gin.configurable(fn_or_cls, module=module))


def external_configurable(fn: Callable[..., Any], name: str, module: str) -> Callable[..., Any]:
  """``gin.external_configurable`` with the same safety as :func:`configurable`."""
  return _register(lambda: gin.external_configurable(fn, name=name, module=module))


def write_config(model_dir: str, name: str = 'config.gin', operative: bool = False) -> str:
  """Writes the parsed (or, with ``operative``, the operative) gin config into ``model_dir``."""
  os.makedirs(model_dir, exist_ok=True)
  text = gin.operative_config_str() if operative else gin.config_str()
  path = os.path.join(model_dir, name)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)
  return path


def parse_command_line(argv: Sequence[str], required: bool = True) -> list[str]:
  """Parses gin flags from ``argv`` and returns the other arguments.

  Args:
    argv: command-line arguments (no program name).
    required: fail (one message) when a ``%gin.REQUIRED`` value is left unset.

  Raises:
    GinFlagError, ValueError: see :func:`parse_gin` and :func:`check_required`.
  """
  args = split_gin_args(argv)
  if not args.gin_files:
    raise GinFlagError('No --gin_file given. Start from a shipped experiment, e.g. '
                       '--gin_file=gin/experiments/bible_es_en_padir.gin (see docs/gin.md).')
  parse_gin(args.gin_files, args.gin_bindings, args.gin_search_paths, required=required,
            strict_bindings=True)
  return args.rest
