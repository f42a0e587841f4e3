"""Exceptions raised by the photos library.

Library code raises these; only the CLI (``jobs/``) turns them into exit codes and
messages. Foreign exceptions are translated at the stage boundary with ``raise X from exc``
so a user sees what happened, to which file, and what to do.

Hierarchy::

    PhotosError
    ├── ScanError            a photo root cannot be walked (missing, not a folder)
    ├── DecodeError          one file cannot be decoded (becomes an error row, never stops a run)
    ├── ModelError
    │   ├── UnknownModelError    no model of that name in the registry
    │   ├── WeightsMissingError  weights not in --weights-dir, the torch hub cache, or downloadable
    │   ├── ModelFileError       a model file is unreadable, truncated or inconsistent
    │   └── UnsupportedModelError  a model file uses an op or feature the converter lacks
    ├── IndexStoreError      the index folder or database cannot be opened or written
    │   └── IndexLockedError     another `photos index` holds the index
    └── QueryError           a search query that cannot mean anything (e.g. empty)
"""

from __future__ import annotations


class PhotosError(Exception):
    """Base of every error this library raises on purpose."""


class ScanError(PhotosError):
    """A photo root cannot be walked."""


class DecodeError(PhotosError):
    """One file cannot be turned into pixels; ``reason`` is shown to the user."""

    def __init__(self, reason: str, stage: str = "decode") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


class ModelError(PhotosError):
    """A model cannot be built or loaded."""


class UnknownModelError(ModelError):
    """No model of that name in the registry."""


class WeightsMissingError(ModelError):
    """Weights for a model are not available locally and could not be downloaded."""


class ModelFileError(ModelError):
    """A model file (e.g. a TF.js graph's JSON or weights) is unreadable, truncated or
    inconsistent; the message names the file."""


class UnsupportedModelError(ModelError):
    """A model file is well formed but uses an op or attribute the converter does not
    support; raised at load time, naming the op, the node and the file."""


class IndexStoreError(PhotosError):
    """The index folder or its database cannot be used."""


class IndexLockedError(IndexStoreError):
    """Another process is indexing into the same index folder."""


class QueryError(PhotosError):
    """A search query that cannot be answered as given."""
