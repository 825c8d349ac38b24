"""The bounded embedding cache: LRU eviction by bytes, fp16 storage, counters, budget errors."""

import numpy as np
import pytest
import torch

from mudo_app.distill.embedding_cache import EmbeddingCache
from mudo_app.distill.teacher_bank import TeacherBank, patch_centre_world
from mudo_app.errors import InputError
from mudo_app.io.volume import Volume


def _emb(value: float) -> torch.Tensor:
    return torch.full((1, 4, 2, 2, 2), value)  # 32 values: 64 bytes in fp16, 128 in fp32


def test_least_recently_used_is_evicted_to_stay_within_the_budget():
    cache = EmbeddingCache(budget_bytes=3 * 64)  # room for three fp16 embeddings
    for k in "abc":
        cache.put(k, _emb(ord(k)))
    assert cache.get("a") is not None  # "a" is now the most recent; "b" the least
    cache.put("d", _emb(4.0))
    assert cache.get("b") is None and cache.get("c") is not None and cache.get("d") is not None
    assert cache.stats() == {"hits": 3, "misses": 1, "evictions": 1, "bytes": 192, "entries": 3}
    cache.put("d", _emb(5.0))  # replacing an entry does not grow the cache
    assert cache.bytes == 192 and float(cache.get("d")[0, 0, 0, 0, 0]) == 5.0


def test_storage_is_fp16_and_answers_are_float32():
    cache = EmbeddingCache(budget_bytes=1000)
    cache.put("x", torch.tensor([1.0001, 3.14159]))
    got = cache.get("x")
    assert got.dtype == torch.float32 and cache.bytes == 4
    assert torch.equal(got, torch.tensor([1.0001, 3.14159]).half().float())
    assert EmbeddingCache(1000, "fp32").entry_bytes(torch.zeros(10)) == 40


def test_a_zero_budget_stores_nothing_and_a_tiny_one_is_refused():
    cache = EmbeddingCache(budget_bytes=0)
    cache.put("x", _emb(1.0))
    assert cache.get("x") is None and len(cache) == 0
    cache.check_fits(10**9)  # 0 means "cache nothing": never refused
    with pytest.raises(InputError, match="cannot hold one teacher embedding .* 64 bytes"):
        EmbeddingCache(budget_bytes=63).check_fits(32)
    with pytest.raises(InputError, match="at least 0"):
        EmbeddingCache(budget_bytes=-1)
    with pytest.raises(InputError, match="storage"):
        EmbeddingCache(10, "bf8")


def test_teacher_outputs_from_fp16_embeddings_are_within_1e_2_of_fp32():
    """The stated tolerance of fp16 storage: a stand-in's mask-prompt probabilities move by < 1e-2."""
    from mudo_app.models.teachers import load_teacher

    teacher = load_teacher("CT")
    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(0, 200, (40, 40, 40)).astype(np.float32), np.diag([8.0, 8, 8, 1]))
    centre = patch_centre_world(vol.affine, (0, 0, 0), (32, 32, 32))
    masks = torch.rand(2, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    answers = []
    for storage in ("fp32", "fp16"):
        bank = TeacherBank(teacher, (32, 32, 32), EmbeddingCache(2**30, storage))
        emb = bank.embedding(("ct", 0), vol, centre)
        assert torch.equal(emb, bank.embedding(("ct", 0), vol, centre))  # a miss answers what a hit does
        answers.append(bank.from_masks(emb, bank.frame((8.0, 8.0, 8.0)), masks))
    assert float((answers[0] - answers[1]).abs().max()) < 1e-2


def test_a_bank_refuses_a_budget_below_one_embedding():
    from mudo_app.models.teachers import load_teacher

    teacher = load_teacher("PET")
    need = int(np.prod(teacher.model.image_encoder.embedding_shape)) * 2
    with pytest.raises(InputError, match=f"embedding_cache_mb.*{need} bytes"):
        TeacherBank(teacher, (32, 32, 32), EmbeddingCache(need - 1, what="config field 'embedding_cache_mb'"))
