"""Teacher-output cache: run the frozen teacher once per example, train against its stored outputs.

One concern per module: :mod:`.spec` what is cached and its fingerprint; :mod:`.store` the on-disk format
and the memory-mapped reader; :mod:`.writer` writing and publishing a directory; :mod:`.build` the
inference pass (one path for one process and for several); :mod:`.cached` the cached teacher;
:mod:`.source` choosing live or cached and finding caches under the root; :mod:`.dev_eval` the stored
teacher dev evaluation.

A distillation run calls the teacher on every batch of every epoch (and every stage of a pipeline), although
its outputs for an example never change. The cache runs one inference pass over the distinct examples
(large ``train.eval_batch_size`` batches, ``torch.inference_mode``, length-sorted so that batches carry
little padding) and stores what the objective reads on disk, memory-mapped, so caches larger than RAM stay
on disk and only the rows of the current batch are read.

Layout of a cache directory (all arrays raw little-endian, row order = the build order)::

    meta.json          fingerprint + its components, the stored arrays, shapes and dtypes; written last
    ids.npy            (N,) int64 example ids, one per row
    lengths.npy        (N,) int64 real tokens per example (padding is never stored)
    input_ids.bin      (T,) int32 real tokens of every example, concatenated (every lookup is checked on them)
    logits.bin         (N, C) teacher logits
    token_logits.bin   (T, C) instead, for token classification: per-token logits at real tokens
    hidden_{i}.bin     (T, H) hidden_states[i] at real tokens (only the indices the objective reads)
    {q,k,v}_{l}.bin    (T, W) Q/K/V projections of 0-based layer l at real tokens
    scores_{l}.bin     (heads * sum n^2,) pre-softmax scores of layer l, each example's (heads, n, n) block
    probs_{l}.bin      (heads * sum n^2,) attention probabilities of layer l, same layout

``T = sum_b n_b`` real tokens; example ``r``'s tokens are rows ``offsets[r]:offsets[r + 1]`` with
``offsets = [0, cumsum(lengths)]``. Variable-length examples are therefore stored without padding and padded
back per batch (with zeros) to the batch's padded length at lookup time.

Derived features are not stored twice: a layer whose Q/K/V are cached gets its scores and probabilities
recomputed from Q and K with the very functions the live hooks use
(:func:`~textdistill.models.hooks.scores_from_qk`, :func:`~textdistill.models.hooks.probs_from_scores`),
and a layer with cached scores gets its probabilities as ``softmax(scores + mask)``, as the hooks compute
them. For the ``(heads, n, n)`` maps of short sequences storing the map is smaller than storing Q and K
(``heads * n^2 < 2 * n * W`` while ``n < 2 * d_head``), so Q/K are stored only when the objective asks for
Q/K/V anyway.

Fingerprint (:func:`.spec.cache_fingerprint`): a SHA-256 over

* the teacher's weights: the bytes, dtypes, shapes and names of every tensor of the *loaded* model's
  ``state_dict`` (rather than the weight files' bytes or their size + mtime: the loaded tensors are what
  produce the outputs, whatever the file format, shard layout or hub cache location, and an in-memory edit
  changes them too; hashing ~0.5 GB of BERT-base takes well under a second), plus the model config (minus
  its path and library version);
* the tokenizer files in the teacher directory (when it is local);
* ``max_length``;
* the data: every distinct example's id, ``input_ids`` and ``token_type_ids`` as encoded (so any tokenizer
  or truncation change that alters an input changes the hash, even for a hub tokenizer);
* the stored features, the storage dtype and the compute precision of the pass.

A directory whose fingerprint differs, or which is incomplete or corrupt (missing ``meta.json``, a missing
or wrongly sized array), is rebuilt. The cache is written to a temporary sibling directory and renamed into
place when complete, so a crash mid-pass never leaves a directory that passes validation.

Several processes (``torch.distributed`` initialised) build one cache together: see :mod:`.build`.

Example:
    >>> cache = build_teacher_cache(teacher, [train_ds], collator, directory="cache/sst2",
    ...                             request=objective.teacher_request(), device=device)
    >>> source = CachedTeacher(cache, objective.teacher_request(), device)
    >>> teacher_out = source(batch)  # ModelOutputs, float32, shaped like the live teacher's
"""
