#!/usr/bin/env bash
# Thin wrapper: see docs/launching.md.
exec python3 -m padir.launch local "$@"
