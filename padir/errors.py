"""One or two lines for a user mistake; the full traceback only on request.

Every command (``padir <command>`` and ``python -m padir.<module>``) runs its ``main`` through
:func:`call`. A user mistake (a malformed gin flag or file, a required argument left unbound, a
module that does not exist, an unwritable or wrong path, an unreadable or incompatible
checkpoint, Ctrl-C) is printed as ``<prog>: <what is wrong, and the fix>`` on stderr and the
command exits non-zero: 1, or 130 for Ctrl-C. Any other exception is a bug and keeps its
traceback.

``--debug`` anywhere on a command line, or ``PADIR_DEBUG=1`` in the environment, shows the full
traceback of every error. The flag sets the variable, so processes a command starts (the local
launcher's) inherit it.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
import tokenize
from typing import Any, Callable, Sequence

DEBUG_FLAG = '--debug'
DEBUG_ENV = 'PADIR_DEBUG'
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
MAX_LINE_CHARS = 400

# Lines gin appends to an exception's message ("  In call to configurable 'train' ...").
_GIN_CONTEXT = re.compile(r'^\s+(In call to configurable|In bindings string|In file|'
                          r'No values supplied by Gin|Gin had values bound|Caller supplied)')


class UserError(Exception):
  """Base of padir's errors whose message says all (what is wrong and the fix)."""


def debug_enabled() -> bool:
  """Whether full tracebacks were asked for (``--debug`` or ``PADIR_DEBUG=1``)."""
  return os.environ.get(DEBUG_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


def pop_debug_flag(argv: Sequence[str]) -> list[str]:
  """``argv`` without ``--debug``; when it was there, sets ``PADIR_DEBUG=1``."""
  argv = list(argv)
  if DEBUG_FLAG in argv:
    os.environ[DEBUG_ENV] = '1'
  return [a for a in argv if a != DEBUG_FLAG]


def _first_line(text: str) -> str:
  lines = [line for line in str(text).splitlines() if line.strip()]
  return lines[0].strip() if lines else ''


def _cap(line: str) -> str:
  return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS - 3] + '...'


def _gin_location(message: str) -> str:
  """' (in FILE, line N)' or ' (in the binding "X = Y")' from gin's appended context."""
  lines = message.splitlines()
  for i, line in enumerate(lines):
    found = re.match(r'\s+In file "?(.+?)"?, line (\d+)', line)
    if found:
      return f' (in {found.group(1)}, line {found.group(2)})'
    if re.match(r'\s+In bindings string', line) and i + 1 < len(lines):
      return f' (in the binding "{lines[i + 1].strip()}")'
  return ''


def _without_gin_context(message: str) -> str:
  """The message without the lines gin appends (and the binding echoed after them)."""
  kept, skip_next = [], False
  for line in message.splitlines():
    if skip_next:
      skip_next = False
      continue
    if _GIN_CONTEXT.match(line):
      skip_next = bool(re.match(r'\s+In bindings string', line))
      continue
    kept.append(_cap(line.rstrip()))
  return '\n'.join(kept).strip()


def _syntax_message(err: SyntaxError) -> str:
  text = (err.text or '').strip()
  where = (f'the binding "{text}"' if err.filename in (None, '<string>')
           else f'{err.filename}, line {err.lineno}')
  token = re.search(r"Failed to parse token '(.*)'", str(err.msg))
  reason = (f"cannot parse the value {token.group(1)!r}" if token
            else _first_line(err.msg) or 'invalid syntax')
  hint = ('strings need inner quotes, e.g. --gin.MODEL_DIR="\'/tmp/run\'"; numbers, lists and '
          'dicts are Python literals')
  return f'gin syntax error in {where}: {reason}.\n{hint}.'


def _missing_arguments_message(message: str) -> str | None:
  """For gin's "No values supplied ... for arguments: [...]": which configurable needs what."""
  args = re.search(r'No values supplied by Gin or caller for arguments: \[(.*?)\]', message)
  name = re.search(r"In call to configurable '([^']+)'", message)
  if not args or not name:
    return None
  missing = [a.strip().strip('\'"') for a in args.group(1).split(',') if a.strip()]
  selector = _full_selector(name.group(1))
  scope = re.search(r"in scope '([^']+)'", message)
  where = f' (used by {scope.group(1)})' if scope else ''
  flags = ', '.join(f'--gin.{selector}.{a}=VALUE' for a in missing)
  return (f'{selector}{where} needs {", ".join(missing)}: bind it in a gin file or with '
          f'{flags}.')


def _full_selector(name: str) -> str:
  """The module-qualified gin name of a configurable given by its short name."""
  try:
    from gin import config as gin_config  # pylint: disable=g-import-not-at-top
    match = gin_config._REGISTRY.get_match(name)  # pylint: disable=protected-access
    return match.selector if match is not None else name
  except Exception:  # pylint: disable=broad-except
    return name


_OS_HINTS = {
    errno.EACCES: 'no permission: choose a writable path or fix the permissions',
    errno.EPERM: 'not permitted: choose a writable path or fix the permissions',
    errno.EROFS: 'a read-only file system: choose a writable path',
    errno.EEXIST: 'a file is in the way where a directory is needed: choose another path',
    errno.ENOTDIR: 'a file is in the way where a directory is needed: choose another path',
    errno.EISDIR: 'a directory where a file is needed: check the path',
    errno.ENOENT: 'check the path',
    errno.ENOSPC: 'the disk is full: free space or choose another path',
}


def _os_message(err: OSError) -> str:
  """'<what>: <path> (<hint>).' also for an OSError gin re-raised with only its text."""
  code, what, path = err.errno, err.strerror, err.filename
  if what is None:  # gin re-raises OSError(message): recover the fields from the text
    found = re.match(r"\[Errno (\d+)\] ([^:]+)(?:: '(.*)')?", _first_line(str(err)))
    if found:
      code, what, path = int(found.group(1)), found.group(2), found.group(3)
    else:
      what = _first_line(_without_gin_context(str(err))) or type(err).__name__
  where = f': {path}' if path else ''
  if err.filename2:
    where += f' -> {err.filename2}'
  hint = _OS_HINTS.get(code)
  return f'{what}{where}' + (f' ({hint}).' if hint else '.')


def describe(err: BaseException) -> str | None:
  """The short message for a user mistake, or None for an unexpected error (a bug).

  Args:
    err: the exception a command raised.

  Returns:
    One or two lines (a few more only for messages written as a list, such as every missing
    required gin value), or None when the traceback should be shown.
  """
  if isinstance(err, KeyboardInterrupt):
    return 'interrupted (Ctrl-C); rerun the same command to resume.'
  if isinstance(err, SyntaxError):
    return _syntax_message(err)
  if isinstance(err, tokenize.TokenError):
    return ('gin syntax error: unbalanced brackets or quotes in a gin file or binding (e.g. '
            '--gin.TASK_FEATURE_LENGTHS="{\'inputs\': 64, \'targets\': 64}").')
  message = str(err)
  if isinstance(err, UserError):
    return _without_gin_context(message) or type(err).__name__
  if isinstance(err, ImportError):
    return (f'{_first_line(message)}{_gin_location(message)}: install it, or fix the module '
            'name in the gin file, binding or --module flag.')
  if isinstance(err, TypeError):
    missing = _missing_arguments_message(message)
    if missing:
      return missing
    if 'In call to configurable' in message and 'argument' in message:
      return f'{_first_line(message)}{_gin_location(message)}.'
    return None
  if isinstance(err, OSError):
    return _os_message(err)
  if isinstance(err, ValueError):
    return _without_gin_context(message) or type(err).__name__
  return None


def call(fn: Callable[[], Any], prog: str) -> int:
  """Runs ``fn()`` and returns its exit code; user mistakes become short messages.

  Args:
    fn: the command's body; returns an exit code (None is 0).
    prog: the command's name, the prefix of its messages (``padir train``).

  Returns:
    ``fn()``'s code, 1 for a user mistake, 130 for Ctrl-C.

  Raises:
    Whatever ``fn`` raised when it is a bug or ``--debug`` / ``PADIR_DEBUG=1`` is on.
  """
  try:
    return int(fn() or 0)
  except (SystemExit, GeneratorExit):
    raise
  except BaseException as err:  # pylint: disable=broad-except
    if debug_enabled():
      raise
    message = describe(err)
    if message is None:
      raise
    newline = '\n' if isinstance(err, KeyboardInterrupt) else ''
    print(f'{newline}{prog}: {message}', file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED if isinstance(err, KeyboardInterrupt) else EXIT_ERROR


def command(prog: str) -> Callable[[Callable[..., Any]], Callable[..., int]]:
  """Decorates a ``main(argv)``: drops ``--debug`` from ``argv`` and runs it through :func:`call`.

  Args:
    prog: the command's name for messages.
  """
  def wrap(main: Callable[..., Any]) -> Callable[..., int]:
    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
      args = pop_debug_flag(sys.argv[1:] if argv is None else argv)
      return call(lambda: main(args), prog)
    return wrapped
  return wrap
