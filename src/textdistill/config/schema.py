"""The configuration schema: the single source of truth for every option.

Plain stdlib dataclasses, usable from Python without YAML. Each field's docstring-style comment is shown by
``textdistill config show --help-keys``. A task setting left unset (None) is inferred from the data and the
teacher (``textdistill.data.task_inference``) and printed in one ``task:`` line at the start of a run. Precedence: defaults < YAML < ``key.sub=value`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textdistill.config.augment import AugmentConfig
from textdistill.config.lm import LMConfig


@dataclass
class TeacherConfig:
    """The frozen teacher."""

    path: str | None = None
    """Local directory or hub id of an ``AutoModelForSequenceClassification`` checkpoint."""
    cache: bool | None = None
    """Compute teacher outputs once per example and store them on disk (memory-mapped) instead of
    running the teacher every step. ``null`` (default, auto): cache, unless the cache would not fit on the
    disk (then the teacher runs live, with a note); ``true``: cache, an error when it would not fit;
    ``false``: always run the teacher live and store nothing (no teacher dev-evaluation cache either)."""
    cache_dtype: str = "fp16"
    """Storage precision of the teacher cache: fp16, bf16 or fp32."""
    cache_dir: str | None = None
    """Where the teacher cache lives; default ``<output_dir>/../.textdistill-cache``."""
    trust_remote_code: bool = False
    """Allow model code shipped with the checkpoint to run (off: loading never executes code)."""
    gguf_file: str | None = None
    """causal_lm: name of a GGUF file inside teacher.path to load (dequantised; needs the gguf package)."""
    store_topk: int | None = None
    """causal_lm: keep the teacher's top-k next-token log-probabilities (+ rest mass) per token on disk and
    train without the teacher in memory; null runs the teacher live. k = the vocabulary size is exact."""


@dataclass
class StudentConfig:
    """How the student is built (registry name in ``type``)."""

    type: str = "pretrained"
    """Builder: pretrained | truncate | shrink | bilstm."""
    path: str | None = None
    """pretrained: local directory or hub id of the student checkpoint."""
    num_layers: int | None = None
    """truncate/shrink: number of transformer layers of the student."""
    layers: list[int] | None = None
    """truncate: 0-based teacher layers to copy (default: evenly spread, last layer included)."""
    hidden_size: int | None = None
    """shrink: hidden width (default: the teacher's)."""
    num_heads: int | None = None
    """shrink: attention heads (default: the teacher's, or hidden_size // 64)."""
    intermediate_size: int | None = None
    """shrink: feed-forward width (default: 4 * hidden_size)."""
    num_kv_heads: int | None = None
    """shrink (causal_lm, grouped-query attention models such as Llama): key/value heads; must divide num_heads."""
    init_embeddings_from_teacher: bool = True
    """shrink/bilstm: initialise token embeddings from the teacher's (projected by PCA when widths differ)."""
    vocab: Any = "full"
    """Student vocabulary: full (the source tokenizer's: the teacher's, or the pretrained student's own) |
    auto (only the tokens of the training text, augmentation included, plus special tokens) | N (the N most
    frequent of those) | a file of tokens, one per line. A trimmed or foreign vocabulary gives the student its
    own tokenizer: teacher and student then each tokenize the raw text (cross-tokenizer KD, sentence-level
    terms only). WordPiece tokenizers only."""
    glove: str | None = None
    """bilstm: a GloVe-format text file (``textdistill provision glove``); token embeddings start from the
    vector of each token's word (``##`` stripped) where GloVe has one. student.embedding_dim must match it."""
    embedding_dim: int = 300
    """bilstm: token embedding width."""
    lstm_hidden: int = 300
    """bilstm: hidden units per direction."""
    lstm_layers: int = 1
    """bilstm: stacked LSTM layers."""
    pooling: str = "max"
    """bilstm: max | mean | last pooling over time."""
    mlp_hidden: int = 400
    """bilstm: width of the classifier MLP's hidden layer."""
    dropout: float = 0.1
    """bilstm: dropout probability."""
    case_embedding_dim: int = 0
    """bilstm, token classification: width of an embedding of each word's casing (lower, Title, UPPER, mixed,
    digits, ...) fed to the LSTM next to the token embedding; 0 = none. Uncased teachers (MiniLM) lose the
    capital letters, one of the strongest cues for names; this gives them back to the student."""


@dataclass
class DataConfig:
    """Task data: files (TSV/CSV/JSONL) or a HF datasets name."""

    train: str | None = None
    """Training file (or, with format=hf, the dataset name)."""
    dev: str | None = None
    """Development file used for evaluation and best-checkpoint selection."""
    test: str | None = None
    """Optional test file, evaluated once at the end."""
    format: str = "auto"
    """auto (by extension) | tsv | csv | jsonl | conll | hf."""
    packing: bool = False
    """causal_lm: concatenate examples into rows of max_length tokens (no padding) instead of padding."""
    chat_template: bool | None = None
    """causal_lm: render prompts with the tokenizer's chat template (null: when it has one)."""
    text_column: str | None = None
    """Column holding the text (or the first text of a pair). Unset: inferred from the header: a known pair
    (sentence1/sentence2, question/sentence, premise/hypothesis, text_a/text_b, question1/question2) makes a
    sentence-pair task, else the first of sentence, text, content, review, comment, document, tweet.
    Setting it turns off pair inference (set text_pair_column too for pairs)."""
    text_pair_column: str | None = None
    """Column holding the second text of a pair (e.g. QNLI 'sentence'); inferred with text_column."""
    label_column: str | None = None
    """Column holding the label (string or integer; float for regression). Unset: the first of label,
    labels, score, gold_label, target, class, sentiment, y in the header."""
    labels: list[str] | None = None
    """Label order (ids follow it). Default: the teacher's label map, else sorted labels of the train set."""
    regression: bool | None = None
    """Treat the label as a real number (num_labels = 1). Unset: inferred: true when the teacher has one
    output, or (no teacher) when every train label is a number and some value has a fraction or there are
    more than 10 distinct values; false otherwise."""
    encoding: str = "utf-8"
    """Text encoding of the files (e.g. latin-1)."""
    skip_bad_rows: bool = False
    """Skip rows with a wrong field count or empty text/label (counted and reported) instead of failing."""
    max_length: int = 128
    """Tokens per example after truncation."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding); order stays seeded."""
    max_train_examples: int | None = None
    """Use a seeded random subset of N training examples (kept in file order)."""
    max_eval_examples: int | None = None
    """Use a seeded random subset of N dev/test examples (kept in file order)."""
    hf_subset: str | None = None
    """format=hf: dataset configuration name (e.g. 'sst2' of 'glue')."""
    hf_train_split: str = "train"
    """format=hf: split used for training."""
    hf_dev_split: str = "validation"
    """format=hf: split used for evaluation."""
    dev_fraction: float | None = None
    """Carve a seeded dev split of this fraction out of train when no dev file is given."""
    task: str = "auto"
    """auto | sequence_classification | token_classification | causal_lm. auto: causal_lm when the teacher
    is a causal LM (or a GGUF file), token_classification for CoNLL column files and JSONL with a token
    list, else sequence classification. causal_lm distils a generative LM (train on .txt or .jsonl with
    text or prompt/response; docs/lm.md)."""
    tag_column: int = -1
    """Token tasks, CoNLL files: 0-based column of the tag (negative counts from the end; default the last)."""
    tokens_key: str = "tokens"
    """Token tasks, JSONL: key of the token list."""
    tags_key: str = "tags"
    """Token tasks, JSONL: key of the tag list."""
    tag_scheme: str = "auto"
    """Token tasks: the files' tag scheme, auto | iob1 | iob2 | bioes | bmes (auto: detected from train)."""
    convert_tags: str | None = None
    """Token tasks: re-tag every split in this scheme (iob1 | iob2 | bioes | bmes) before training; IOB1
    files are converted to iob2 when unset (a B- tag at every entity start is easier to learn)."""
    label_all_subtokens: bool = False
    """Token tasks: give every sub-token of a word the word's tag (default: only the first sub-token is
    labelled, the others are ignored by losses and metrics)."""
    entity_mode: str = "lenient"
    """Token tasks: how entities are matched in evaluation, best-checkpoint selection, eval_results.json and
    the report. lenient (seqeval's default, conlleval's reading: an I- tag after O starts an entity) |
    strict (seqeval mode="strict": only well-formed chunks of the scheme count; IOB2 and BIOES only)."""


@dataclass
class LayerMapConfig:
    """Which student layer is matched with which teacher layer."""

    strategy: str | None = None
    """uniform (TinyBERT) | last (MiniLM) | every_k | explicit; None: the loss term's default
    (uniform for TinyBERT-style terms, last for minilm/minilmv2)."""
    k: int | None = None
    """every_k: teacher layers per student layer (default: teacher_layers // student_layers)."""
    pairs: list[list[int]] | None = None
    """explicit: [[student_layer, teacher_layer], ...] with 1-based layers, 0 = embeddings."""
    teacher_layer: int | None = None
    """last/minilmv2: the teacher layer to match (1-based; default: the last)."""


@dataclass
class LossTermConfig:
    """One weighted term of the objective."""

    name: str = "kd_kl"
    """Registry name of the loss term (see ``textdistill losses``)."""
    weight: Any = 1.0
    """A number or a schedule ``{schedule: linear|cosine|constant, start: a, end: b}``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Term parameters (e.g. temperature, which may also be a schedule)."""
    layer_map: LayerMapConfig | None = None
    """Layer matching for intermediate-layer terms."""


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: float = 3.0
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Optimizer steps to run; overrides epochs."""
    batch_size: int = 32
    """Examples per optimizer step: the GLOBAL batch, split across processes and accumulation micro-batches."""
    eval_batch_size: int = 64
    """Examples per evaluation / teacher-cache batch (sorted by length, so batches carry little padding).
    On the 2-core development CPU, scoring the SST-2 teacher on dev took 6.3 / 7.0 / 8.4 s at 32 / 64 / 128
    (docs/performance.md); raise it on GPUs."""
    lr: float | None = None
    """Peak learning rate of AdamW. Unset: by student kind: 5e-4 for students that start from random
    weights (distill with student.type shrink or bilstm), 5e-5 for pretrained weights (finetune, and
    distill with student.type pretrained or truncate)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    warmup_ratio: float = 0.1
    """Fraction of steps with linear warm-up (ignored when warmup_steps is set)."""
    warmup_steps: int | None = None
    """Warm-up steps."""
    lr_schedule: str = "linear"
    """After warm-up: linear | cosine | constant."""
    grad_accum: int = 1
    """Split each batch into this many micro-batches (same result, less memory)."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm (None: no clipping)."""
    precision: str = "auto"
    """auto (bf16 where the CPU/GPU supports it, else fp32) | fp32 | bf16 | fp16."""
    seed: int = 42
    """Seed of every random number generator."""
    eval_every: int | None = None
    """Evaluate every N optimizer steps (None: at the end of each epoch)."""
    save_every: int | None = None
    """Write a resumable checkpoint every N optimizer steps (None: at each evaluation)."""
    keep_checkpoints: int = 2
    """How many resumable checkpoints to keep (the best model is kept separately)."""
    metric: str | None = None
    """The task metric: it selects the best model and is the one eval_results.json, the report and
    retention use. Unset: inferred from the task: pearson for regression; mcc for acceptability (a data or
    teacher path naming cola / acceptability); f1 (of class id 1) for binary paraphrase / duplicate tasks
    (mrpc, qqp, paraphrase, duplicate in a path or class name); macro_f1 for 5 or more classes; accuracy
    otherwise. ``last`` keeps the model of the last evaluation (e.g. an intermediate-layer stage whose head
    is not trained yet)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement."""
    log_every: int = 20
    """Write a metrics.jsonl line every N steps."""
    max_bad_steps: int = 10
    """Abort after this many steps skipped for a NaN/Inf loss or gradient."""
    compile: bool = False
    """Wrap the student in torch.compile."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class Config:
    """A complete run: teacher, student, data, objective, training, output."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: list[LossTermConfig] = field(default_factory=lambda: [LossTermConfig(name="kd_kl")])
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Data augmentation of the training set (TinyBERT / Tang et al.); augmented rows get the teacher's
    soft labels only (hard-label terms skip them)."""
    lm: LMConfig = field(default_factory=LMConfig)
    """Causal-LM generation: on-policy distillation (GKD), ``mode: generate`` stages, report samples."""
    report: bool = True
    """distill: write report.md / report.json / plots for the student at the end of the run: size,
    compression, the task metric, retention and agreement on the whole dev set (seconds)."""
    report_speed: bool = False
    """distill: also time CPU latency / throughput and compute teacher-student layer CKA in that report
    (about a minute for a MiniLM-size teacher on a 2-core CPU; ``textdistill benchmark`` does the same)."""
    output_dir: str = "runs/textdistill"
    """Run directory (resolved config, best model, metrics, report)."""
    overwrite: bool = False
    """Replace an output directory that already holds a run."""
