"""The paper's 5-label ablation table on the synthetic benchmark (``muduo benchmark``).

Every method trains in the same harness (:class:`mudo_app.train.trainer.Trainer`) on the same
synthetic datastore (5 labelled cases, the rest unlabelled) with the same iteration budget and seed,
and is scored on held-out test cases generated from another seed. The model is each run's last
iteration: no selection, test labels are only read for scoring. The PET is synthetic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mudo_app.bench.machine import describe
from mudo_app.bench.scoring import TEST_SEED_OFFSET, score_student
from mudo_app.distill.teacher_bank import patch_starts
from mudo_app.io.atomic import atomic_write
from mudo_app.models.checkpoint import load_student
from mudo_app.synth import PhantomSettings
from mudo_app.synth.writers import generate_cases, write_dataset
from mudo_app.train.config import TrainConfig, config_from_dict
from mudo_app.train.trainer import Trainer

# method name -> config fields that differ from MuDuo's defaults (the paper's ablation rows)
METHODS: dict[str, dict] = {
    "supervised": {"method": "supervised"},
    "mean_teacher": {"method": "mean_teacher"},
    "ct_teacher_only": {"teachers": "ct"},
    "pet_teacher_only": {"teachers": "pet"},
    "muduo": {},
    "muduo_no_filter": {"filter": "none"},
    "muduo_fixed_threshold": {"filter": "threshold", "iou_threshold": 0.5},
    "muduo_k1": {"k_points": 1},
    "fully_supervised": {"method": "fully_supervised"},
}


@dataclass(frozen=True)
class Preset:
    """One benchmark: its rows, seeds, budget and data sizes.

    ``recipe``: config fields every row shares (the student's patch sampling and loss);
    ``truth_dice_every``: the rows with teachers log their truth diagnostics this often
    (:class:`mudo_app.distill.diagnostics.TruthDice`; 0: not at all).
    """

    name: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    iterations: int
    unlabelled: int
    test_cases: int
    labelled: int = 5
    prompt_net_iterations: int = 150
    recipe: dict[str, Any] = field(default_factory=dict)
    truth_dice_every: int = 0


# the standard preset's student recipe and budget, chosen on validation data (seed 3000), never on the
# test cases: sample-datasets/scripts/choose_recipe.py -> sample-datasets/benchmarks/recipe.json (README "Benchmarks")
STANDARD_RECIPE: dict[str, Any] = {"dice": "batch"}  # best of four sampling / Dice variants on validation
STANDARD_ITERATIONS = 3000  # the longest budget measured; fully_supervised - supervised = 6.4 points there (< 8)

PRESETS = {
    # <= 10 minutes on 2 CPU cores: two rows, one seed
    "quick": Preset("quick", ("supervised", "muduo"), (0,), iterations=500, unlabelled=5, test_cases=3),
    # every row, three seeds: about 1.5-2 hours on 2 CPU cores
    "full": Preset(
        "full", tuple(METHODS), (0, 1, 2), iterations=400, unlabelled=8, test_cases=4, prompt_net_iterations=200
    ),
}
PRESETS["standard"] = Preset(
    "standard",
    ("supervised", "mean_teacher", "ct_teacher_only", "pet_teacher_only", "muduo", "fully_supervised"),
    (0, 1, 2),
    iterations=STANDARD_ITERATIONS,
    unlabelled=15,
    test_cases=6,
    prompt_net_iterations=200,
    recipe=STANDARD_RECIPE,
    truth_dice_every=50,
)


def _has_teachers(method: str) -> bool:
    return METHODS[method].get("method", "muduo") == "muduo"


def run_config(preset: Preset, method: str, seed: int, data: Path, run: Path, threads: int) -> TrainConfig:
    """The training config of one benchmark run: the preset's shared budget and data, the row's switches."""
    return config_from_dict(
        {
            "datastore": str(data),
            "out": str(run),
            "preprocessed": str(data.parent / "preprocessed"),  # one preprocessed copy shared by every run
            "seed": seed,
            "threads": threads,
            "iterations": preset.iterations,
            "checkpoint_every": preset.iterations,
            "prompt_net_iterations": preset.prompt_net_iterations,
            **preset.recipe,
            **METHODS[method],
            **({"truth_dice_every": preset.truth_dice_every} if _has_teachers(method) else {}),
        }
    )


def run_benchmark(preset: Preset, out: Path, threads: int = 2, progress: bool = True) -> dict:
    """Train and score every (method, seed) of ``preset`` under ``out``; returns benchmark.json's content."""
    import torch

    torch.set_num_threads(threads)
    out = Path(out)
    started = time.perf_counter()
    data = out / "data"
    if not data.is_dir():
        write_dataset(data, preset.labelled + preset.unlabelled, seed=0, labelled=preset.labelled, progress=progress)
    test = generate_cases(TEST_SEED_OFFSET, 0, preset.test_cases, PhantomSettings())
    methods: dict[str, dict] = {}
    for name in preset.methods:
        per_seed: list[dict] = []
        for seed in preset.seeds:
            run = out / "runs" / name / f"seed{seed}"
            cfg = run_config(preset, name, seed, data, run, threads)
            seconds = _train_once(cfg, run, progress)
            model, prep, meta = load_student(run / "student.pt")
            score = score_student(model, prep, meta, test)
            calls = _teacher_calls(run)
            truth = _truth_dice(run)
            per_seed.append(
                {
                    "seed": seed,
                    **score,
                    "train_seconds": seconds,
                    "seconds_per_iteration": None if seconds is None else round(seconds / preset.iterations, 3),
                    **calls,
                    **({"truth_dice": truth} if truth else {}),
                }
            )
        dice = [r["dice"] for r in per_seed]
        hd = [r["hd95_mm"] for r in per_seed if np.isfinite(r["hd95_mm"])]
        methods[name] = {
            "dice_mean": float(np.mean(dice)),
            "dice_std": float(np.std(dice)),
            "hd95_mean": float(np.mean(hd)) if hd else float("nan"),
            "per_seed": per_seed,
        }
        if name != preset.methods[-1]:  # partial results after every row: a long run can be read as it goes
            write_outputs(_result(preset, methods, started, complete=False), out)
    result = _result(preset, methods, started, complete=True)
    write_outputs(result, out)
    return result


def _train_once(cfg, run: Path, progress: bool) -> float | None:
    """Train the run unless it finished before (a re-run of the benchmark reuses it); returns its
    training seconds, kept in ``run/timing.json`` (None for a run finished before timings were kept)."""
    timing = run / "timing.json"
    if not (run / "student.pt").is_file():
        resumed = (run / "state.pt").is_file()
        t0 = time.perf_counter()
        Trainer(cfg, progress=progress).run(resume=resumed)
        seconds = round(time.perf_counter() - t0, 1)
        with atomic_write(timing) as tmp:
            tmp.write_text(json.dumps({"train_seconds": seconds, "resumed": resumed}))
    return json.loads(timing.read_text())["train_seconds"] if timing.is_file() else None


def _result(preset: Preset, methods: dict[str, dict], started: float, complete: bool) -> dict:
    timed = [r["train_seconds"] for m in methods.values() for r in m["per_seed"] if r["train_seconds"] is not None]
    return {
        "preset": asdict(preset),
        "machine": describe(),
        "complete": complete,
        "minutes": round((time.perf_counter() - started) / 60, 1),  # this invocation (finished runs are reused)
        "training_minutes_all_runs": round(sum(timed) / 60, 1),
        "teacher_cost": teacher_cost_report(methods, preset) if complete else None,
        "data": {
            "training_cases": preset.labelled + preset.unlabelled,
            "labelled": preset.labelled,
            "test_cases": preset.test_cases,
            "test_seed": TEST_SEED_OFFSET,
            "pet": "synthetic",
        },
        "metrics": "Dice: mean over the 13 classes of the mean over test cases (missed = 0); HD95 in mm, "
        "structures found only (misses counted apart); std over seeds",
        "methods": methods,
    }


def teacher_cost_report(methods: dict[str, dict], preset: Preset) -> dict:
    """Teacher GFLOPs per iteration: the stand-ins as run here, and official ``vit_b_ori`` teachers
    under the same prompt counts; encoder passes measured in the ``muduo`` runs (cache), or implied."""
    from mudo_app.bench.teacher_cost import per_iteration, teacher_flops

    runs = methods.get("muduo", {}).get("per_seed", [])
    measured = float(np.mean([r.get("ct_encoder_calls", 0) for r in runs])) / preset.iterations if runs else None
    b, n_cls = 2, 13
    policies: dict[str, float] = {
        "published (encoder per class per patch)": b * n_cls,
        "no cache (encoder once per patch)": b,
    }
    if measured is not None:
        positions = len(patch_starts(PhantomSettings().shape, (64, 64, 64))) * preset.unlabelled
        policies["cache, this run (measured)"] = measured
        policies["cache, 30,000 iterations (every position encoded once)"] = min(positions / 30000, b)
    out = {
        "reference_tflops": 14.7,
        "note": "both teachers; decoders: one mask prompt (CT) and one 3-point prompt "
        "(PET) per class per unlabelled patch, 2 patches, 13 classes",
    }
    for arch in ("standin_small", "vit_b_ori"):
        flops = teacher_flops(arch)
        out[arch] = {
            "gflops_per_pass": {k: round(v / 1e9, 3) for k, v in flops.items()},
            "per_iteration": per_iteration(flops, b, n_cls, policies),
        }
    return out


def _teacher_calls(run: Path) -> dict:
    lines = (run / "log.jsonl").read_text().splitlines() if (run / "log.jsonl").is_file() else []
    if not lines:
        return {}
    last = json.loads(lines[-1])
    return {k: last[k] for k in last if k.endswith("_calls")}


def _truth_dice(run: Path) -> list[dict]:
    """The run's truth diagnostics from ``log.jsonl``: ``[{"iteration": i, **report}, ...]``."""
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    rows = (json.loads(line) for line in path.read_text().splitlines())
    return [{"iteration": r["iteration"], **r["truth_dice"]} for r in rows if "truth_dice" in r]


def _finite_mean(values) -> float:
    kept = [v for v in values if np.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _class_mean(per_class: dict[str, float]) -> float:
    return _finite_mean(per_class.values())


def mechanism_rows(result: dict) -> list[tuple[str, dict[str, float]]]:
    """Per row with truth diagnostics: each source's Dice (mean over classes, then over seeds) in the
    last report, the end of training. Sources: :data:`mudo_app.distill.diagnostics.SOURCES`."""
    out = []
    for name, m in result["methods"].items():
        last = [r["truth_dice"][-1] for r in m["per_seed"] if r.get("truth_dice")]
        if last:
            sources = [k for k in last[0] if k not in ("iteration", "samples")]
            out.append((name, {k: _finite_mean([_class_mean(r[k]) for r in last]) for k in sources}))
    return out


def markdown(result: dict) -> str:
    p = result["preset"]
    lines = [
        f"# MuDuo benchmark ({p['name']} preset)",
        "",
        f"Synthetic PET/CT (synthetic PET), {p['labelled']} labelled + {p['unlabelled']} unlabelled training cases, "
        f"{p['test_cases']} held-out test cases, {p['iterations']} iterations per run, seeds {list(p['seeds'])}. "
        f"Machine: {result['machine']}. Training time of all runs: {result['training_minutes_all_runs']} min; "
        f"this invocation: {result['minutes']} min (finished runs are reused)"
        + (
            "."
            if result.get("complete", True)
            else f" so far (PARTIAL: {len(result['methods'])} of {len(p['methods'])} rows)."
        ),
        "",
        "| method | Dice % (mean ± std over seeds) | lesion Dice % | lesion FN ml | lesion FP ml "
        "| HD95 mm (found only) | missed structures | s / iteration |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["methods"].items():
        missed = np.mean([r["missed"] for r in m["per_seed"]])
        spi = [r["seconds_per_iteration"] for r in m["per_seed"] if r["seconds_per_iteration"] is not None]
        spi_text = f"{np.mean(spi):.2f}" if spi else "n/a"
        lesion = [r["lesion_autopet"] for r in m["per_seed"] if "lesion_autopet" in r]
        les = {k: _finite_mean([x[k] for x in lesion]) for k in ("dice", "fn_volume_ml", "fp_volume_ml")}
        lines.append(
            f"| {name} | {100 * m['dice_mean']:.1f} ± {100 * m['dice_std']:.1f} | {100 * les['dice']:.1f} | "
            f"{les['fn_volume_ml']:.1f} | {les['fp_volume_ml']:.1f} | {m['hd95_mean']:.1f} | {missed:.1f} "
            f"| {spi_text} |"
        )
    lines += ["", result["metrics"] + "; lesion columns: the autoPET metrics (mean over test cases with lesions)."]
    mech = mechanism_rows(result)
    if mech:
        sources = list(mech[0][1])
        lines += [
            "",
            "## Does the pseudo-label beat the student? (truth diagnostics, end of training)",
            "",
            "Dice % against the unlabelled patches' synthetic ground truth (never trained on), mean over "
            "classes and seeds, pooled over the last report's iterations; `student_kept` is the student on "
            "the samples whose pseudo-label was kept. MuDuo can only help where `pseudo_label` beats it.",
            "",
            "| method | " + " | ".join(sources) + " |",
            "|---|" + "---|" * len(sources),
        ]
        lines += [f"| {n} | " + " | ".join(f"{100 * v[k]:.1f}" for k in sources) + " |" for n, v in mech]
        lines += ["", "Per class and over iterations: `benchmark.json` (`truth_dice`) and `truth_dice.png`."]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out: Path) -> None:
    from mudo_app.evaluation.plots import _pyplot

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_write(out / "benchmark.md") as tmp:
        tmp.write_text(markdown(result))
    plt = _pyplot()
    names = list(result["methods"])
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 1), 4))
    means = [100 * result["methods"][n]["dice_mean"] for n in names]
    stds = [100 * result["methods"][n]["dice_std"] for n in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("mean Dice over 13 classes (%)")
    ax.set_title(f"MuDuo benchmark, {result['preset']['name']} preset (synthetic PET/CT)")
    fig.tight_layout()
    with atomic_write(out / "benchmark_dice.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    _plot_truth_dice(result, out, plt)


def _plot_truth_dice(result: dict, out: Path, plt) -> None:
    """One panel per row with truth diagnostics (seed 0, or its first seed): each source's Dice (mean
    over classes) over the iterations."""
    rows = [(n, next(r for r in m["per_seed"] if r.get("truth_dice"))) for n, m in result["methods"].items()
            if any(r.get("truth_dice") for r in m["per_seed"])]  # fmt: skip
    if not rows:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.5), squeeze=False, sharey=True)
    for ax, (name, run) in zip(axes[0], rows):
        series = run["truth_dice"]
        its = [r["iteration"] for r in series]
        for source in [k for k in series[0] if k not in ("iteration", "samples")]:
            ax.plot(its, [100 * _class_mean(r[source]) for r in series], label=source)
        ax.set_title(f"{name}, seed {run['seed']}", fontsize=9)
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("Dice vs synthetic truth (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(out / "truth_dice.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def preset_by_name(name: str, methods: Sequence[str] = ()) -> Preset:
    preset = PRESETS[name]
    if methods:
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        preset = Preset(**{**asdict(preset), "methods": tuple(methods)})
    return preset
