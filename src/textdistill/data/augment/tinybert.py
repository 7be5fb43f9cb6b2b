"""TinyBERT data augmentation (Jiao et al. 2019, "TinyBERT", arXiv:1909.10351, Algorithm 1).

For each word ``w`` of a sentence (words from BERT's basic tokenizer):

- words that are not purely alphabetic, and stop words, are never replaced (as in the reference script);
- if ``w`` is a single word-piece, it is masked and the masked LM proposes candidates: the top-K tokens at
  the mask, minus ``##`` continuation pieces (so fewer than K may remain) and, unlike the reference, minus
  special tokens (a predicted ``[SEP]`` written into the text would split it when re-tokenised). As in the
  reference, the LM input is the masked sentence *paired with the original sentence*,
  ``[CLS] masked-pieces [SEP] original-pieces [SEP]`` with segment ids 0 / 1, truncated to ``max_length``;
  a word whose mask falls past ``max_length`` keeps its text (no candidates: the word itself);
- if ``w`` has several word-pieces, its candidates are its K nearest words by cosine similarity in a
  word-vector space (GloVe; title-cased when ``w`` is title-case); a word without a vector keeps its text.

Then ``N_a`` times: copy the words, and for each candidate word draw one of its candidates uniformly and
replace the word with probability ``p_t`` (a word with no candidates "replaces" itself). Draws equal to
the original or to an earlier draw are dropped.

Unlike the reference (one forward pass per word per sentence), every masked input of the corpus is built
first and predicted in length-sorted, padded batches (:meth:`MaskedLM.top_k`); the candidates, hence the
output under a seed, are the same as one-at-a-time prediction.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment.methods import AUGMENTERS
from textdistill.data.augment.mlm import MaskedLM, MaskedQuery, check_masked_lm, load_masked_lm
from textdistill.data.augment.word_vectors import WordVectors, from_embeddings, load_glove
from textdistill.data.augment.words import is_replaceable
from textdistill.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass
class WordCandidates:
    """Replacement candidates of one word of one segment.

    Attributes:
        index: position of the word in the segment's word list.
        word: the word.
        route: ``mlm`` (single word-piece), ``vectors`` (several pieces) or ``truncated`` (the mask fell
            past ``max_length``: no prediction).
        options: the candidates sampled from (``[word]`` when the route found none).
    """

    index: int
    word: str
    route: str
    options: list[str]


@AUGMENTERS.register("tinybert")
class TinyBertAugmenter:
    """TinyBERT's Algorithm 1 over word segments (see the module docstring).

    Args:
        cfg: uses ``p_t``, ``top_k``, ``max_length``, ``batch_size``, ``mlm``, ``word_vectors``.
        tokenizer: the teacher's tokenizer (indexes ``teacher_embeddings``).
        teacher_embeddings: ``[vocab_size, H]`` input embeddings, the word-vector substitute.
        mlm: a loaded masked LM (default: ``load_masked_lm(cfg.mlm)``).
        word_vectors: ready word vectors (overrides ``cfg.word_vectors`` and the substitute; for tests).
        pos_tagger: ignored (accepted so every augmenter takes the same arguments).
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        *,
        tokenizer: Any | None = None,
        teacher_embeddings: Any | None = None,
        mlm: MaskedLM | None = None,
        word_vectors: WordVectors | None = None,
        pos_tagger: Any = None,
    ):
        self.cfg = cfg
        self.mlm = mlm if mlm is not None else load_masked_lm(str(cfg.mlm))
        check_masked_lm(self.mlm)
        self.tokenizer = tokenizer
        self.teacher_embeddings = teacher_embeddings
        self._vectors = word_vectors
        positions = self.mlm.max_positions
        self.max_length = min(cfg.max_length, positions) if positions else cfg.max_length
        self.segments: list[list[str]] = []
        self.candidates: list[list[WordCandidates]] = []
        self.routes: Counter[str] = Counter()

    def word_vectors(self) -> WordVectors:
        """The word vectors for multi-piece words, loaded on first use (see :mod:`.word_vectors`)."""
        if self._vectors is None:
            if self.cfg.word_vectors:
                self._vectors = load_glove(self.cfg.word_vectors)
            elif self.teacher_embeddings is not None:
                if self.tokenizer is None:
                    raise ModelError(
                        "teacher_embeddings were given without the teacher's tokenizer, so their rows cannot "
                        "be mapped to words. Fix: pass tokenizer=<the teacher's tokenizer>."
                    )
                self._vectors = from_embeddings(
                    self.teacher_embeddings, self.tokenizer, source="teacher embeddings"
                )
            else:
                logger.info(
                    "augment.word_vectors is not set and no teacher embeddings were given: multi-piece words "
                    "use the masked LM's input embeddings over its whole-word vocabulary (a substitute for "
                    "the paper's GloVe vectors)."
                )
                emb = self.mlm.model.get_input_embeddings().weight
                self._vectors = from_embeddings(emb, self.mlm.tokenizer, source=f"{self.mlm.name} embeddings")
        return self._vectors

    def prepare(self, segments: list[list[str]]) -> None:
        """Compute the candidates of every replaceable word of every segment (batched LM calls)."""
        tok = self.mlm.tokenizer
        self.segments = segments
        distinct = sorted({w for seg in segments for w in seg})
        # WordPiece splits each basic-tokenizer word on its own, so per-word ids equal in-context ids.
        pieces: dict[str, list[int]] = {}
        for start in range(0, len(distinct), 4096):
            chunk = distinct[start : start + 4096]
            for w, ids in zip(chunk, tok(chunk, add_special_tokens=False)["input_ids"]):
                pieces[w] = list(ids)
        cls_id, sep_id, mask_id = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
        queries: list[MaskedQuery] = []
        pending: list[tuple[int, int, str, str]] = []  # (segment, word index, word, route)
        for s, words in enumerate(segments):
            flat: list[int] = []
            offsets: list[int] = []
            for w in words:
                offsets.append(len(flat))
                flat.extend(pieces[w])
            for j, w in enumerate(words):
                n_pieces = len(pieces[w])
                if n_pieces == 0 or not is_replaceable(w):
                    continue
                if n_pieces > 1:
                    pending.append((s, j, w, "vectors"))
                    continue
                mask_pos = 1 + offsets[j]
                if mask_pos >= self.max_length:
                    pending.append((s, j, w, "truncated"))
                    continue
                masked = list(flat)
                masked[offsets[j]] = mask_id
                ids = [cls_id, *masked, sep_id, *flat, sep_id][: self.max_length]
                types = ([0] * (len(masked) + 2) + [1] * (len(flat) + 1))[: self.max_length]
                queries.append(MaskedQuery(tuple(ids), tuple(types), mask_pos))
                pending.append((s, j, w, "mlm"))
        predicted = self.mlm.top_k(queries, self.cfg.top_k, batch_size=self.cfg.batch_size) if queries else []
        vector_words = [w for _, _, w, route in pending if route == "vectors"]
        neighbours = self.word_vectors().nearest(vector_words, self.cfg.top_k) if vector_words else {}
        specials = set(getattr(tok, "all_special_tokens", []))
        self.candidates = [[] for _ in segments]
        self.routes = Counter()
        q = 0
        for s, j, w, route in pending:
            if route == "mlm":
                tokens = tok.convert_ids_to_tokens(predicted[q])
                q += 1
                # ids without a token (vocabularies padded to a multiple of 8) and special tokens ([SEP]
                # would split the sentence when re-tokenised) cannot be written back as words
                options = [
                    t for t in tokens if t is not None and not t.startswith("##") and t not in specials
                ]
            elif route == "vectors":
                options = list(neighbours.get(w, []))
                if w.istitle():  # keep the capitalisation of a capitalised word (cased models)
                    options = [o.title() for o in options]
            else:
                options = []
            self.routes[route] += 1
            self.candidates[s].append(WordCandidates(j, w, route, options or [w]))
        logger.info(
            "tinybert candidates: %d words by masked LM (%d distinct inputs, %d forward passes so far), "
            "%d by word vectors, %d past max_length",
            self.routes["mlm"],
            len(set(queries)),
            self.mlm.calls,
            self.routes["vectors"],
            self.routes["truncated"],
        )

    def sample(self, segment: int, rng: random.Random) -> list[str]:
        """One draw: each candidate word becomes a uniform choice among its options with probability p_t."""
        words = list(self.segments[segment])
        for cand in self.candidates[segment]:
            # draw the option before the coin, as the reference does, so both use the generator alike
            option = rng.choice(cand.options)
            if rng.random() < self.cfg.p_t:
                words[cand.index] = option
        return words
