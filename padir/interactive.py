"""Use a trained model from Python: ``padir.load(MODEL_DIR)`` (T5X's InteractiveModel, smaller).

::

  import padir
  model = padir.load('padir_quickstart/student_distilled')
  model.translate(['En el principio creó Dios los cielos y la tierra.'])
  model.translate('Y dijo Dios', iterations=2, length_beam=1)   # PaDIR overrides
  model.score(['Y dijo Dios'], ['And God said'])                 # [N] log-scores
  for p in model.refine('Y dijo Dios').passes: print(p)         # every pass of the decode

A model dir is self-describing: ``padir train`` (and every quickstart stage) writes
``config.gin``, the whole parsed config, and :func:`load` reads the network, the vocabulary,
the feature lengths and the decoding defaults back from it; nothing has to be repeated as
flags. A ``decoding.json`` next to it (the quickstart writes one for its distilled student: the
setting chosen on the validation split) overrides the decoding defaults (RefineConfig or
ARConfig fields, plus ``iterations``, ``rule`` and ``stutter``), and may name an AR model dir
(``rerank_model_dir``, relative to the model dir) whose log-likelihood re-ranks PaDIR's length
candidates.

:func:`load` parses gin while it builds the model, then clears gin's config again: it replaces
whatever gin config the caller had parsed. Decoding runs on every local device of this process
(a data-parallel mesh); for multi-host decoding of whole splits use ``padir infer``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np

from padir import eval as eval_lib
from padir import evaluation
from padir import gin_utils
from padir import partitioning as partitioning_lib
from padir.special_ids import EOS_ID

CONFIG_FILE = 'config.gin'
DECODING_FILE = 'decoding.json'
# Short names accepted by translate() / refine() for the usual decoding knobs.
_ALIASES = {'iterations': 'num_iterations'}


def model_spec(model: Any = gin.REQUIRED, vocabulary: Any = None,
               task_feature_lengths: Mapping[str, int] | None = None) -> tuple[Any, Any, Any]:
  """What a saved config describes: (model, vocabulary, feature lengths)."""
  return model, vocabulary, task_feature_lengths


model_spec = gin_utils.configurable(model_spec, module='padir.interactive')

_SPEC_BINDINGS = ('padir.interactive.model_spec.model = %MODEL',
                  'padir.interactive.model_spec.vocabulary = %VOCABULARY',
                  'padir.interactive.model_spec.task_feature_lengths = %TASK_FEATURE_LENGTHS')


@dataclasses.dataclass
class Refinement:
  """Every pass of one PaDIR decode (the best length candidate).

  Attributes:
    source: the input sentence.
    translation: the final output text.
    passes: the canvas after each pass as text, ``[MASK]`` where a position is re-masked.
    tokens: the canvas ids after each pass (its length, EOS included).
    confidences: the confidence of each canvas position after each pass: the log-probability
      the decoder gave its token (what the remasking rule ranks).
    length: the canvas length of the best candidate (EOS included).
  """
  source: str
  translation: str
  passes: list[str]
  tokens: list[list[int]]
  confidences: list[list[float]]
  length: int


def _read_decoding_file(model_dir: str) -> dict[str, Any]:
  path = os.path.join(model_dir, DECODING_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path, encoding='utf-8') as f:
    try:
      value = json.load(f)
    except json.JSONDecodeError as err:
      raise ValueError(f'{path} is not valid JSON ({err}); fix or delete it.') from None
  if not isinstance(value, dict):
    raise ValueError(f'{path} must hold a JSON object of decoding options; fix or delete it.')
  return value


def read_config(model_dir: str, gin_bindings: Sequence[str] = ()) -> tuple[Any, Any, Any, Any]:
  """Builds the model a model dir's config.gin describes.

  Args:
    model_dir: a directory ``padir train`` wrote.
    gin_bindings: extra bindings applied after the saved config (``"NAME = VALUE"``).

  Returns:
    (model, tokenizer, task_feature_lengths, decode_config): the decode config is the model's
    default (a `RefineConfig` for PaDIR, an `ARConfig` for AR), built while the saved config is
    parsed so that later gin changes do not alter it.

  Raises:
    ValueError: not a model dir, or a config that does not describe a model.
  """
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.isdir(model_dir):
    raise ValueError(f'--model_dir {model_dir} does not exist; pass the MODEL_DIR of a padir '
                     'train run or a quickstart model (e.g. padir_quickstart/teacher).')
  if not os.path.isfile(path):
    raise ValueError(f'{model_dir} has no {CONFIG_FILE}, so it is not a padir model dir (padir '
                     'train writes one next to the checkpoints).')
  from padir import train as train_lib  # pylint: disable=g-import-not-at-top
  try:
    gin_utils.parse_gin([path], [*_SPEC_BINDINGS, *gin_bindings], finalize=False,
                        required=False)
    try:
      model, vocabulary, lengths = model_spec()
    except (ValueError, TypeError) as err:
      raise ValueError(f'{path} does not describe a model the way padir train writes it '
                       f'(MODEL, VOCABULARY and TASK_FEATURE_LENGTHS): {err}') from None
    tokenizer = train_lib._vocabulary_of(model, vocabulary)  # pylint: disable=protected-access
    decode_config = default_decode_config(model)
  finally:
    gin.clear_config(clear_constants=False)
  lengths = dict(lengths or {})
  if not {'inputs', 'targets'} <= set(lengths):
    raise ValueError(f'{path}: TASK_FEATURE_LENGTHS must hold inputs and targets lengths, got '
                     f'{lengths}.')
  return model, tokenizer, lengths, decode_config


def default_decode_config(model: Any) -> Any:
  """The model's decoding defaults: `PadirModel.decoding_config()` or ``ARConfig()`` (gin's
  bindings as they are now)."""
  if hasattr(model, 'decoding_config'):
    return model.decoding_config()
  from padir.ar_decoding import ARConfig  # pylint: disable=g-import-not-at-top
  return ARConfig()


def _decode_overrides(config: Any, options: Mapping[str, Any]) -> Any:
  """``config`` with translate()'s options applied (``iterations``, ``rule`` and fields)."""
  from padir import refine_decoding  # pylint: disable=g-import-not-at-top
  options = {_ALIASES.get(k, k): v for k, v in options.items() if v is not None}
  remask = {k: options.pop(k) for k in ('rule', 'stutter') if k in options}
  if remask:
    if not hasattr(config, 'remask'):
      raise ValueError(f"{sorted(remask)} are PaDIR options; this is an AR model (options: "
                       f"{[f.name for f in dataclasses.fields(config)]}).")
    options['remask'] = dataclasses.replace(config.remask, **remask)
  return refine_decoding.with_overrides(config, options)


def _bucket(n: int, shards: int, limit: int) -> int:
  """Rows to decode ``n`` sentences in: a power of two (few shapes to compile), a multiple of
  the data shards, at most ``limit`` (rounded up to the shards)."""
  size = 1
  while size < n:
    size *= 2
  size = min(size, limit)
  return -(-size // shards) * shards


def _init_shapes(partitioner: partitioning_lib.Partitioner,
                 feature_lengths: Mapping[str, int]) -> dict[str, tuple[int, int]]:
  return {'encoder_input_tokens': (partitioner.batch_shards, int(feature_lengths['inputs'])),
          'decoder_target_tokens': (partitioner.batch_shards, int(feature_lengths['targets']))}


def _default_partitioner() -> partitioning_lib.Partitioner:
  """Data parallel over every local device."""
  return partitioning_lib.Partitioner(
      mesh_shape=(-1, 1, 1), logical_axis_rules=partitioning_lib.standard_logical_axis_rules())


class LoadedModel:
  """A trained AR or PaDIR model with its vocabulary, ready to translate (see the module doc).

  Build it with :func:`load` (a model dir) or :func:`from_params` (a model in memory).

  Attributes:
    model: the padir model (`padir.models.PadirModel` or `EncoderDecoderModel`).
    params: its parameters, sharded by ``param_shardings``.
    tokenizer: its vocabulary.
    feature_lengths: ``{'inputs': L_in, 'targets': L}``.
    decode_config: the decoding defaults (`RefineConfig` or `ARConfig`).
    is_padir: True for a PaDIR (bidirectional) model.
    model_dir, step: where it was loaded from (None for a model in memory).
    reranker: an AR `LoadedModel` whose log-likelihood re-ranks PaDIR's length candidates.
  """

  def __init__(self, model: Any, params: Any, tokenizer: Any,
               feature_lengths: Mapping[str, int], *, param_shardings: Any,
               partitioner: partitioning_lib.Partitioner, decode_config: Any = None,
               batch_size: int = 64, seed: int = 0, model_dir: str | None = None,
               step: int | None = None, reranker: 'LoadedModel | None' = None):
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.feature_lengths = dict(feature_lengths)
    if not {'inputs', 'targets'} <= set(self.feature_lengths):
      raise ValueError(f'feature_lengths must hold inputs and targets lengths, got '
                       f'{self.feature_lengths}.')
    self.param_shardings, self.partitioner = param_shardings, partitioner
    self.is_padir = hasattr(model, 'decoding_config')
    if decode_config is None:
      decode_config = default_decode_config(model)
    self.decode_config = (model.decoding_config(decode_config) if self.is_padir
                          else decode_config)
    self.batch_size = int(batch_size)
    if self.batch_size < 1:
      raise ValueError(f'batch_size={batch_size} must be >= 1.')
    self.seed, self.model_dir, self.step = seed, model_dir, step
    if reranker is not None and (not self.is_padir or reranker.is_padir):
      raise ValueError('A reranker re-ranks a PaDIR model\'s candidates and must be an AR '
                       'model.')
    self.reranker = reranker
    self._predictors: dict[str, evaluation.Predictor] = {}
    self._scorer = None

  def __repr__(self) -> str:
    kind = 'PaDIR' if self.is_padir else 'AR'
    where = f'{self.model_dir!r}, step {self.step}' if self.model_dir else 'in memory'
    return f'LoadedModel({kind}, {where})'

  # ------------------------------------------------------------------ helpers

  def _encode(self, sentences: Sequence[str], length: int) -> np.ndarray:
    from padir import infer as infer_lib  # pylint: disable=g-import-not-at-top
    ids, cut = infer_lib.encode_lines(list(sentences), self.tokenizer, length)
    if cut:
      warnings.warn(f'{cut} of {len(sentences)} sentences were longer than {length - 1} '
                    f'tokens, the model\'s input length, and were cut.', stacklevel=3)
    return ids

  def _predictor(self, config: Any, rerank: bool) -> evaluation.Predictor:
    key = (repr(config), rerank)
    if key not in self._predictors:
      model, shardings = self.model, self.param_shardings
      kwargs: dict[str, Any] = {'decode_config': config}
      if rerank:
        from padir import selection  # pylint: disable=g-import-not-at-top
        model = selection.TeacherReranked(self.model, self.reranker.model)
        shardings = (self.param_shardings, self.reranker.param_shardings)
      self._predictors[key] = evaluation.Predictor(model, self.partitioner, shardings, kwargs,
                                                   seed=self.seed)
    return self._predictors[key]

  def _params(self, rerank: bool) -> Any:
    return (self.params, self.reranker.params) if rerank else self.params

  def _decode(self, sentences: Sequence[str], config: Any,
              rerank: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """tokens [N, L] and aux (per-row arrays) of ``sentences``, in order."""
    return self._decode_ids(self._encode(sentences, int(self.feature_lengths['inputs'])), config,
                            rerank)

  def _decode_ids(self, sources: np.ndarray, config: Any,
                  rerank: bool) -> tuple[np.ndarray, dict[str, Any]]:
    predictor = self._predictor(config, rerank)
    out_tokens, out_aux = [], []
    shards = self.partitioner.batch_shards
    for start in range(0, len(sources), self.batch_size):
      block = sources[start:start + self.batch_size]
      rows = _bucket(len(block), shards, self.batch_size)
      padded = np.pad(block, ((0, rows - len(block)), (0, 0)))
      tokens, aux = predictor(self._params(rerank), {'encoder_input_tokens': padded}, start)
      out_tokens.append(tokens[:len(block)])
      out_aux.append({k: v[:len(block)] if np.ndim(v) else v for k, v in aux.items()})
    tokens = np.concatenate(out_tokens)
    # Per-row arrays are concatenated; scalars (the AR loop's step count) keep their largest.
    aux = {k: (np.concatenate([a[k] for a in out_aux]) if np.ndim(out_aux[0][k])
               else np.max([a[k] for a in out_aux])) for k in out_aux[0]}
    return tokens, aux

  def decode_ids(self, sources: np.ndarray, **decoding: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """The jitted decoder on token ids: for benchmarks and custom pipelines.

    Args:
      sources: int32 [N, L_in] source ids (EOS-terminated, 0-padded).
      **decoding: as for :meth:`translate`.

    Returns:
      (tokens [N, L], aux): the decoder's per-row aux arrays with a leading [N] dimension
      (PaDIR: ``iterations``, ``scores``, ``candidate_lengths``, ...) and its scalars (AR:
      ``steps``, the decoder steps run; the largest over the batches).
    """
    sources = np.asarray(sources, np.int32)
    if sources.ndim != 2 or sources.shape[1] != int(self.feature_lengths['inputs']):
      raise ValueError(f'sources must be [N, {self.feature_lengths["inputs"]}] ids, got '
                       f'{sources.shape}.')
    return self._decode_ids(sources, *self._options(decoding))

  def _options(self, decoding: Mapping[str, Any]) -> tuple[Any, bool]:
    """(decode config, whether the AR reranker runs) of one call's decoding options."""
    decoding = dict(decoding)
    if 'rerank_model_dir' in decoding:
      raise ValueError('rerank_model_dir is read from the model dir\'s decoding.json when the '
                       'model is loaded; pass rerank=False to decode without re-ranking.')
    rerank = decoding.pop('rerank', None)
    if rerank and self.reranker is None:
      raise ValueError(f'rerank=True, but {self!r} has no AR reranker (name one with '
                       'rerank_model_dir in the dir\'s decoding.json, or pass reranker= to '
                       'LoadedModel).')
    config = _decode_overrides(self.decode_config, decoding)
    config = self.model.decoding_config(config) if self.is_padir else config
    with_teacher = self.reranker is not None and rerank is not False
    if getattr(config, 'teacher_fixes', False) and not with_teacher:
      # Fixes the caller asked for (a threshold, or more than one round) are refused.
      asked = [f'{k}={decoding[k]}' for k, off in (('teacher_fix_threshold', 0),
                                                    ('teacher_fix_rounds', 1))
               if decoding.get(k, off) != off]
      if asked:
        raise ValueError(f'{", ".join(asked)} needs the '
                         'AR teacher in the decoder, but '
                         + ('rerank=False leaves it out.' if self.reranker is not None else
                            f'{self!r} has none (name one with rerank_model_dir in the dir\'s '
                            'decoding.json).'))
      # The dir's decoding.json asks for the teacher's fixes; without the teacher, none.
      config = config.without_teacher_fixes()
    return config, with_teacher

  # ------------------------------------------------------------------ the API

  def translate(self, sentences: str | Sequence[str], **decoding: Any) -> str | list[str]:
    """Translations of ``sentences`` (one string in, one out), one per input, in order.

    Args:
      sentences: a sentence or a list of them; an empty one gets an empty translation.
      **decoding: overrides of the decoding defaults: for PaDIR ``iterations``,
        ``length_beam``, ``rule``, ``rerank=False`` (no AR re-ranking for this call) and any
        `padir.refine_decoding.RefineConfig` field; for AR any `padir.ar_decoding.ARConfig`
        field (``method='beam'``, ``beam_size``, ...).

    Returns:
      The translation(s).
    """
    single = isinstance(sentences, str)
    items = [sentences] if single else list(sentences)
    out = [''] * len(items)
    todo = [i for i, s in enumerate(items) if s.strip()]
    if todo:
      tokens, _ = self._decode([items[i] for i in todo], *self._options(decoding))
      for i, row in zip(todo, tokens):
        out[i] = self.tokenizer.decode(row.tolist())
    return out[0] if single else out

  def refine(self, sentences: str | Sequence[str], **decoding: Any
             ) -> Refinement | list[Refinement]:
    """Every pass of PaDIR decodes: the canvas and its confidences after each pass.

    Args:
      sentences: a sentence or a list of them (non-empty).
      **decoding: as for :meth:`translate`.

    Returns:
      One `Refinement` per sentence (one, for one string).

    Raises:
      ValueError: for an AR model (it has no passes) or an empty sentence.
    """
    if not self.is_padir:
      raise ValueError(f'{self.model_dir or "this"} is an AR model; refine() shows the passes of '
                       'a PaDIR decode. Use translate().')
    single = isinstance(sentences, str)
    items = [sentences] if single else list(sentences)
    if any(not s.strip() for s in items):
      raise ValueError('refine() needs non-empty sentences.')
    config, rerank = self._options(decoding)
    tokens, aux = self._decode(items, dataclasses.replace(config, return_history=True), rerank)
    out = []
    for i, source in enumerate(items):
      best = int(aux['best_candidate'][i])
      length = int(aux['candidate_lengths'][i, best])
      used = max(int(aux['iterations'][i]), 1)
      hist = aux['history_tokens'][i, best, :used, :length]
      conf = aux['history_confidence'][i, best, :used, :length]
      out.append(Refinement(
          source=source, translation=self.tokenizer.decode(tokens[i].tolist()),
          passes=[self.render(row) for row in hist], tokens=hist.tolist(),
          confidences=np.round(conf.astype(np.float64), 4).tolist(), length=length))
    return out[0] if single else out

  def render(self, ids: Sequence[int]) -> str:
    """Canvas ids as text with ``[MASK]`` for masked positions (up to the first EOS)."""
    masks: set[int] = set()
    if self.is_padir:
      ids_ = self.model.special_ids
      masks.add(ids_.mask)
      if ids_.mask_range_start is not None:  # the [MASK_i] canvas scheme
        masks.update(range(ids_.mask_range_start, ids_.mask_range_start + ids_.mask_range_size))
    parts, run = [], []
    for i in (int(x) for x in ids):
      if i == EOS_ID:
        break
      if i in masks:
        if run:
          parts.append(self.tokenizer.decode(run))
          run = []
        parts.append('[MASK]')
      else:
        run.append(i)
    if run:
      parts.append(self.tokenizer.decode(run))
    return ' '.join(p for p in parts if p)

  def score(self, sources: str | Sequence[str], targets: str | Sequence[str]
            ) -> float | np.ndarray:
    """Log-scores of ``targets`` as translations of ``sources``: [N] float (one for strings).

    AR: ``log p(y | x)`` under teacher forcing, EOS included. PaDIR: the one-pass
    pseudo-log-likelihood of ``y`` from a fully masked canvas of its length
    (`PadirModel.score_batch`) plus ``log p(len(y) | x)`` from the length head. Targets longer
    than the model's target length are cut (with a warning).
    """
    single = isinstance(sources, str)
    src = [sources] if single else list(sources)
    tgt = [targets] if isinstance(targets, str) else list(targets)
    if len(src) != len(tgt):
      raise ValueError(f'score() needs as many targets as sources ({len(tgt)} vs {len(src)}).')
    enc = self._encode(src, int(self.feature_lengths['inputs']))
    dec = self._encode(tgt, int(self.feature_lengths['targets']))
    scorer = self._score_fn()
    out = []
    shards = self.partitioner.batch_shards
    for start in range(0, len(enc), self.batch_size):
      n = min(self.batch_size, len(enc) - start)
      rows = _bucket(n, shards, self.batch_size)
      batch = {'encoder_input_tokens': np.pad(enc[start:start + n], ((0, rows - n), (0, 0))),
               'decoder_target_tokens': np.pad(dec[start:start + n], ((0, rows - n), (0, 0)))}
      with self.partitioner.context():
        scores = scorer(self.params, self.partitioner.shard_batch(batch))
      out.append(np.asarray(scores)[:n])
    result = np.concatenate(out).astype(np.float64)
    return float(result[0]) if single else result

  def _score_fn(self):
    if self._scorer is None:
      model, is_padir = self.model, self.is_padir

      def score(params, batch):
        if not is_padir:
          return model.score_batch(params, batch)
        scores, extra = model.score_batch(params, batch, return_intermediates=True)
        return scores + extra['length_log_prob']

      self._scorer = jax.jit(score, in_shardings=(self.param_shardings,
                                                  self.partitioner.batch_sharding(2)),
                             out_shardings=self.partitioner.replicated())
    return self._scorer


def from_params(model: Any, params: Any, tokenizer: Any, feature_lengths: Mapping[str, int],
                *, decoding: Mapping[str, Any] | None = None, batch_size: int = 64,
                seed: int = 0) -> LoadedModel:
  """A model in memory (e.g. trained in a notebook) with the same API as :func:`load`.

  Args:
    model: a padir model.
    params: its parameters (host or device arrays; placed on this process's devices).
    tokenizer: its vocabulary (`padir.data.vocab.Tokenizer`).
    feature_lengths: ``{'inputs': L_in, 'targets': L}``.
    decoding: overrides of the model's decoding defaults (as for ``translate``).
    batch_size: sentences per call of the jitted decoder.
    seed: key of sampling decoders and random canvases.
  """
  partitioner = _default_partitioner()
  _, shardings = eval_lib.abstract_params(model, partitioner,
                                          _init_shapes(partitioner, feature_lengths))
  params = jax.device_put(params, shardings)
  return LoadedModel(model, params, tokenizer, feature_lengths, param_shardings=shardings,
                     partitioner=partitioner,
                     decode_config=_decode_overrides(default_decode_config(model),
                                                     dict(decoding or {})),
                     batch_size=batch_size, seed=seed)


def load(model_dir: str, *, checkpoint_step: int | None = None,
         gin_bindings: Sequence[str] = (), batch_size: int = 64, seed: int = 0) -> LoadedModel:
  """Loads a trained model dir (``padir train`` or quickstart output) for translation.

  Args:
    model_dir: the run's MODEL_DIR.
    checkpoint_step: a step to load (default: the newest checkpoint).
    gin_bindings: bindings applied after the saved config.gin, e.g.
      ``["decoding/padir.refine_decoding.RefineConfig.num_iterations = 2"]``.
    batch_size: sentences decoded per call of the jitted decoder.
    seed: key of sampling decoders and random canvases.

  Returns:
    A `LoadedModel` with ``translate``, ``score`` and (PaDIR) ``refine``.

  Raises:
    ValueError: not a model dir, a missing step, a bad ``decoding.json``.
  """
  return _load(model_dir, checkpoint_step, gin_bindings, batch_size, seed, None)


def _load(model_dir: str, checkpoint_step: int | None, gin_bindings: Sequence[str],
          batch_size: int, seed: int,
          partitioner: partitioning_lib.Partitioner | None) -> LoadedModel:
  model_dir = os.path.abspath(os.path.expanduser(model_dir))
  model, tokenizer, lengths, config = read_config(model_dir, gin_bindings)
  saved = _read_decoding_file(model_dir)
  rerank_dir = saved.pop('rerank_model_dir', None)
  config = _decode_overrides(config, saved)
  partitioner = partitioner or _default_partitioner()
  params, shardings, step = eval_lib.load_for_inference(
      model, partitioner, model_dir, tokenizer, _init_shapes(partitioner, lengths),
      step=checkpoint_step)
  reranker = None
  if rerank_dir is not None:
    path = os.path.normpath(os.path.join(model_dir, rerank_dir))
    reranker = _load(path, None, (), batch_size, seed, partitioner)
    if reranker.is_padir:
      raise ValueError(f'{os.path.join(model_dir, DECODING_FILE)}: rerank_model_dir '
                       f'{rerank_dir} is a PaDIR model; re-ranking needs an AR model.')
  return LoadedModel(model, params, tokenizer, lengths, param_shardings=shardings,
                     partitioner=partitioner, decode_config=config, batch_size=batch_size,
                     seed=seed, model_dir=model_dir, step=step, reranker=reranker)
