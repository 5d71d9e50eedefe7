"""padir's data layer: corpora, vocabularies, seqio tasks, feature conversion and array export.

This package is the only part of padir that imports TensorFlow, tensorflow-text, TFDS or seqio,
and only some of its modules do. Importing ``padir.data`` itself loads none of them.

TensorFlow-free modules (usable where TF is not installed):
  corpus      TSV reading with bad-row accounting; the embedded Bible corpus.
  textfile    UTF-8 text lines, split at newlines only (every reader uses it).
  arrays      exported numpy splits and a seeded, sharded, resumable batch iterator.
  iterator    the BatchIterator interface the trainer consumes, and its factory.
  metrics     postprocessing and sacrebleu BLEU / chrF with multiple references.
  vocab       vocabulary specs, TF-free tokenizers, fingerprints and special ids.
  train_vocab SentencePiece training script.

TensorFlow / seqio modules:
  tasks       seqio task registration (Bible, WMT, user TSV, distilled) and lookup.
  preprocessors  over-long handling with counts; the token-side pipeline of a task.
  features    the PaDIR feature converter and the converter registry.
  pipeline    a seqio-backed BatchIterator.
  export      ``python -m padir.data.export``: a task split to numpy arrays.
  benchmark   ``python -m padir.bench data``: input-pipeline speed.

See docs/data.md in the repository.
"""
