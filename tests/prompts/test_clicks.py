import numpy as np
import pytest

from mudo_app.prompts.clicks import first_click, next_click


def _ball(shape, centre, r):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return np.linalg.norm(g - np.array(centre), axis=-1) <= r


def test_first_click_deterministic_is_the_centre():
    target = _ball((21, 21, 21), (10, 12, 9), 5)
    assert first_click(target).tolist() == [10, 12, 9]


def test_first_click_random_is_inside():
    target = _ball((21, 21, 21), (10, 12, 9), 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert target[tuple(first_click(target, rng))]


def test_first_click_empty():
    with pytest.raises(ValueError, match="empty"):
        first_click(np.zeros((3, 3, 3), bool))


def test_next_click_targets_the_larger_error():
    target = _ball((30, 30, 30), (15, 15, 15), 6)
    pred = np.zeros_like(target)
    (point, label) = next_click(target, pred)
    assert label == 1 and point.tolist() == [15, 15, 15]
    pred = target | _ball((30, 30, 30), (4, 4, 4), 3)  # a false-positive blob
    point, label = next_click(target, pred)
    assert label == 0 and point.tolist() == [4, 4, 4]
    assert next_click(target, target.copy()) is None
    rng = np.random.default_rng(1)
    point, label = next_click(target, pred, rng)
    assert label == 0 and pred[tuple(point)] and not target[tuple(point)]


def test_random_clicks_draw_the_voxel_argwhere_would():
    """A random click is the ``rng.integers(n)``-th object voxel in C order: the stream of earlier runs."""
    target = _ball((12, 9, 7), (6, 4, 3), 3)
    for seed in range(5):
        expected = np.argwhere(target)[np.random.default_rng(seed).integers(int(target.sum()))]
        assert first_click(target, np.random.default_rng(seed)).tolist() == expected.tolist()
