"""textdistill.data: read task files, resolve labels, tokenize once, collate and batch.

``data.augment`` (data augmentation) is a separate sub-package and is not imported here.
"""
