"""A memory-bounded store of teacher image embeddings: fp16, least recently used evicted.

With the official ``vit_b_ori`` teachers a 400 x 400 x 326 volume has ~180 patch positions, and each
position's embedding is 384 x 8^3 values: an unbounded fp32 cache of 95 unlabelled cases would hold
~27 GB. Here the cache holds at most ``budget_bytes`` (stored as fp16, half the fp32 size); an
evicted embedding is recomputed by its teacher when it is asked for again (a miss).

Embeddings are stored on the device they were computed on and handed back as float32.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import torch

from mudo_app.errors import InputError

STORAGE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


class EmbeddingCache:
    """``get(key)`` / ``put(key, embedding)`` within ``budget_bytes``; counters for the training log.

    Args:
        budget_bytes: the most bytes of stored embeddings; ``put`` evicts least recently used
            entries to stay within it. 0 stores nothing (every ``get`` is a miss).
        storage: ``fp16`` (default) or ``fp32``; ``None`` keeps each tensor's own dtype (and ``get``
            hands it back as stored), for caches of other tensors.
        what: names the setting in error messages (the config field).
    """

    def __init__(self, budget_bytes: int, storage: str | None = "fp16", what: str = "embedding cache budget"):
        if budget_bytes < 0:
            raise InputError(f"{what} must be at least 0 bytes, got {budget_bytes}")
        if storage is not None and storage not in STORAGE_DTYPES:
            raise InputError(f"embedding storage must be one of {sorted(STORAGE_DTYPES)}, got {storage!r}")
        self.budget_bytes = int(budget_bytes)
        self.dtype = None if storage is None else STORAGE_DTYPES[storage]
        self.what = what
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def entry_bytes(self, embedding: torch.Tensor) -> int:
        """Bytes ``embedding`` takes once stored."""
        return embedding.numel() * torch.empty((), dtype=self.dtype or embedding.dtype).element_size()

    def check_fits(self, embedding_numel: int) -> None:
        """Raise :class:`InputError` when a budget above 0 cannot hold even one embedding of this size."""
        need = embedding_numel * torch.empty((), dtype=self.dtype or torch.float32).element_size()
        if 0 < self.budget_bytes < need:
            raise InputError(
                f"{self.what} of {self.budget_bytes} bytes cannot hold one teacher embedding ({need} bytes): "
                f"give at least {need} bytes, or 0 to cache nothing"
            )

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The float32 embedding stored under ``key`` (now the most recently used), or ``None``."""
        stored = self._store.get(key)
        if stored is None:
            self.misses += 1
            return None
        self.hits += 1
        self._store.move_to_end(key)
        return stored if self.dtype is None else stored.float()

    def put(self, key: Hashable, embedding: torch.Tensor) -> None:
        """Store ``embedding`` under ``key``, evicting the least recently used entries to fit."""
        size = self.entry_bytes(embedding)
        if size > self.budget_bytes:
            return
        old = self._store.pop(key, None)
        if old is not None:
            self.bytes -= self.entry_bytes(old)
        while self.bytes + size > self.budget_bytes:
            _, evicted = self._store.popitem(last=False)
            self.bytes -= self.entry_bytes(evicted)
            self.evictions += 1
        self._store[key] = embedding.detach() if self.dtype is None else embedding.detach().to(self.dtype)
        self.bytes += size

    def __len__(self) -> int:
        return len(self._store)

    def stats(self) -> dict[str, int]:
        """Counters since the start: ``hits``, ``misses``, ``evictions``, ``bytes`` held, ``entries``."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "bytes": self.bytes,
            "entries": len(self._store),
        }
