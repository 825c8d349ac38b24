"""The stand-in teachers' *foundation corpus*: many labelled synthetic cases with broader variation.

Real SAM-Med3D and SegAnyPET saw far more (and more varied) data than any user's few labelled cases;
the stand-ins are trained on this corpus to play that part. It shares no generator seed with any
benchmark, demo or test datastore (those use seeds below 10,000): training cases come from
:data:`FOUNDATION_SEED`, the teachers' held-out evaluation cases from :data:`FOUNDATION_HELD_OUT_SEED`.

Variation beyond the benchmark's default :class:`PhantomSettings`: case ``i`` is acquired on one of
:data:`FOUNDATION_GRIDS` (3 to 5 mm, anisotropic too), half of the cases are in the second scanner
domain, and lesions are more frequent and more numerous (up to 16 per case, 5 % lesion-free). The PET
is synthetic.
"""

from __future__ import annotations

from mudo_app.io.datastore import Case
from mudo_app.synth.phantom import PhantomSettings, generate_case
from mudo_app.synth.writers import case_id, case_rng

FOUNDATION_SEED = 731_001
FOUNDATION_HELD_OUT_SEED = 731_002
FOUNDATION_GRIDS: tuple[tuple[float, float, float], ...] = (
    (4.0, 4.0, 4.0),
    (3.0, 3.0, 4.0),
    (5.0, 5.0, 5.0),
    (3.5, 3.5, 3.0),
)


def foundation_settings(index: int) -> PhantomSettings:
    """The acquisition and population settings of corpus case ``index`` (cycles through the grids)."""
    return PhantomSettings(
        spacing=FOUNDATION_GRIDS[index % len(FOUNDATION_GRIDS)],
        second_domain_fraction=0.5,
        lesion_free_fraction=0.05,
        max_lesions=16,
    )


def foundation_cases(first: int, count: int, held_out: bool = False) -> list[Case]:
    """Corpus cases ``first .. first + count - 1`` (labelled with their truth), in memory.

    Args:
        first: index of the first case (case ``i`` depends only on the seed and ``i``).
        count: number of cases.
        held_out: draw from the held-out evaluation seed instead of the training seed.
    """
    if first < 0 or count < 0:
        raise ValueError(f"first and count must not be negative, got {first}, {count}")
    seed = FOUNDATION_HELD_OUT_SEED if held_out else FOUNDATION_SEED
    out = []
    for i in range(first, first + count):
        ct, pet, label, _ = generate_case(case_rng(seed, i), foundation_settings(i))
        out.append(Case(case_id(i), ct, pet, label))
    return out
