"""Tests of padir.data (a package so that module names never clash with tests/)."""
