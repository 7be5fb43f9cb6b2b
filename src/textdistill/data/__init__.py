"""textdistill.data: read task files, resolve labels, tokenize once, collate and batch.

``data.augment`` (data augmentation) is a separate sub-package and is not imported here.
"""

from textdistill.data.collate import Collator
from textdistill.data.corpus import corpus_files, iter_plain_text
from textdistill.data.encoding import IGNORE_INDEX, EncodedDataset
from textdistill.data.labels import LabelMap, check_labels, resolve_label_map
from textdistill.data.readers import Example, ReadResult, detect_format, read_examples, read_hf_dataset
from textdistill.data.samplers import LengthGroupedSampler, ShuffleBatchSampler, make_loader
from textdistill.data.task import TaskData, demo_corpus_path, demo_data_config, load_task_data

__all__ = [
    "IGNORE_INDEX",
    "Collator",
    "EncodedDataset",
    "Example",
    "LabelMap",
    "LengthGroupedSampler",
    "ReadResult",
    "ShuffleBatchSampler",
    "TaskData",
    "check_labels",
    "corpus_files",
    "demo_corpus_path",
    "demo_data_config",
    "detect_format",
    "iter_plain_text",
    "load_task_data",
    "make_loader",
    "read_examples",
    "read_hf_dataset",
    "resolve_label_map",
]
