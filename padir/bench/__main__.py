"""``python -m padir.bench <benchmark> [flags]``."""

import sys

from padir.bench import main

if __name__ == '__main__':
  sys.exit(main())
