"""Keeps Orbax's console noise out of padir's output without hiding real errors.

Two kinds of noise, both harmless:

* Orbax logs routine notes through absl at INFO and WARNING level ("Given directory is read
  only", "Item ... was found in the checkpoint, but could not be restored"). Records from Orbax
  below ERROR are dropped; errors still show.
* When TensorStore fails to read one array of a damaged checkpoint, its other pending reads
  finish after Orbax's event loop has closed and each one prints a "RuntimeError: Event loop is
  closed" traceback through ``sys.unraisablehook`` (hundreds of lines per checkpoint), and
  Orbax coroutines left behind print "Exception ignored in: <coroutine ...>". Those are
  dropped; every other unraisable exception reaches the previous hook.

:func:`install` is idempotent and is called by `padir.checkpoints` before it touches Orbax.
``PADIR_DEBUG=1`` leaves everything visible.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from padir import errors

_ORBAX_PATH_PARTS = (f'{os.sep}orbax{os.sep}', f'{os.sep}tensorstore{os.sep}')
_installed = False


class OrbaxNoiseFilter(logging.Filter):
  """Drops log records below ERROR that come from Orbax (or TensorStore) code."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    return not any(part in (record.pathname or '') for part in _ORBAX_PATH_PARTS)


def is_orbax_noise(unraisable: Any) -> bool:
  """Whether an unraisable exception is Orbax's: a late callback on a closed event loop, or
  an exception inside one of Orbax's coroutines that nobody awaits any more."""
  code = getattr(getattr(unraisable, 'object', None), 'cr_code', None)
  if code is not None and any(p in code.co_filename for p in _ORBAX_PATH_PARTS):
    return True
  err = getattr(unraisable, 'exc_value', None)
  if not isinstance(err, RuntimeError) or str(err) != 'Event loop is closed':
    return False
  tb = getattr(unraisable, 'exc_traceback', None) or err.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is None or f'{os.sep}asyncio{os.sep}' in tb.tb_frame.f_code.co_filename


def install() -> None:
  """Installs the log filter and the unraisable-exception filter (once per process)."""
  global _installed
  if _installed or errors.debug_enabled():
    return
  _installed = True
  noise = OrbaxNoiseFilter()
  for name in ('absl', 'orbax'):
    logging.getLogger(name).addFilter(noise)
  previous = sys.unraisablehook

  def hook(unraisable: Any) -> None:
    if not is_orbax_noise(unraisable):
      previous(unraisable)

  sys.unraisablehook = hook
