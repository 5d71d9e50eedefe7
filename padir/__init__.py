"""padir: generative masked language models and PaDIR parallel decoding in JAX/Flax.

Submodules are imported on demand; importing ``padir`` itself is cheap and never imports
TensorFlow (only ``padir.data``'s seqio modules do).
"""

__version__ = '0.1.0'


def load(model_dir: str, **kwargs):
  """A trained model dir, ready to translate: see `padir.interactive.load`."""
  from padir import interactive  # pylint: disable=g-import-not-at-top
  return interactive.load(model_dir, **kwargs)
