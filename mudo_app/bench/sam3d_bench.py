"""3D SAM benchmark: golden conformance on a device, encoder time (fp32 / bf16), click latency.

    python -m mudo_app.bench.sam3d_bench --specs ../shared/specs/sam3d [--device cuda] [--json OUT]

* conformance: the golden fixture's relative errors on ``--device`` in fp32 (TF32 off) and under bf16
  autocast;
* encoder: seconds per 128^3 call of ``vit_b_ori`` (and the stand-in), median of ``--repeats``;
* click: latency of one click with the embedding cached, through :class:`Sam3DPredictor` on a
  synthetic 4 mm whole-body case (decoder + upsampling + mapping back to the input grid).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mudo_app.bench.machine import describe
from mudo_app.io.atomic import atomic_write
from mudo_app.models.sam3d import SAM_MED3D_CT, STANDIN_CT, Sam3DPredictor, build_sam3d
from mudo_app.models.sam3d.conformance import deterministic_model, fixture_module
from mudo_app.resources import sam3d_specs

GOLDEN_KEYS = (
    "image_embedding",
    "points_low_res_logits",
    "points_iou",
    "mask_low_res_logits",
    "mask_iou",
    "points_mask_multimask_low_res_logits",
    "points_mask_multimask_iou",
)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def golden_model(specs: Path, device: str):
    dw = fixture_module(specs)
    return deterministic_model(specs, dw).to(device), dw.golden_inputs()


def golden_outputs(model, inputs, device: str, dtype=None):
    image, coords, labels, mask = (torch.from_numpy(x).to(device) for x in inputs)
    ctx = torch.autocast(device.split(":")[0], dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        emb = model.image_encoder(image)
        out = {"image_embedding": emb}
        out["points_low_res_logits"], out["points_iou"] = model.decode(emb, points=(coords, labels))
        out["mask_low_res_logits"], out["mask_iou"] = model.decode(emb, mask=mask)
        (out["points_mask_multimask_low_res_logits"], out["points_mask_multimask_iou"]) = model.decode(
            emb, points=(coords, labels), mask=mask, multimask_output=True
        )
    return {k: v.float().cpu().numpy() for k, v in out.items()}


def conformance(model, inputs, golden: dict, device: str, dtype=None) -> dict:
    out = golden_outputs(model, inputs, device, dtype)
    return {k: float(np.linalg.norm(out[k] - golden[k]) / np.linalg.norm(golden[k])) for k in GOLDEN_KEYS}


def encoder_seconds(model, device: str, repeats: int, dtype=None, batch: int = 1) -> float:
    x = torch.randn(batch, 1, 128, 128, 128, device=device)
    ctx = (
        (lambda: torch.autocast(device.split(":")[0], dtype=dtype))
        if dtype
        else (lambda: torch.autocast("cpu", enabled=False))
    )

    def run():
        with torch.no_grad(), ctx():
            model.image_encoder(x)

    return _timed(run, device, repeats)


def click_latency(model, contract, device: str, repeats: int) -> dict:
    from mudo_app.synth import PhantomSettings, case_rng, generate_case

    ct, _, label, _ = generate_case(case_rng(0, 0), PhantomSettings())
    pred = Sam3DPredictor(model, contract, device=device)
    pred.set_image(ct.array.astype(np.float32), ct.affine, "CT")
    target = np.argwhere(label.array == 1)
    click = target[len(target) // 2].tolist()
    t = time.perf_counter()
    first = pred.predict(points=[click], labels=[1])
    _sync(device)
    first_s = time.perf_counter() - t
    clicks = [click, target[len(target) // 3].tolist()]
    seconds = _timed(
        lambda: pred.predict(points=clicks, labels=[1, 0], mask_input=first.low_res_logits), device, repeats
    )
    return {
        "first_click_s": first_s,
        "cached_click_s": seconds,
        "volume_shape": list(ct.shape),
        "encoder_calls": pred.encoder_calls,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", type=Path, default=sam3d_specs(), help="3D SAM conformance fixture folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    dev = args.device
    if dev.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    result = {"machine": describe(dev), "device": dev}
    if args.specs is None or not (args.specs / "golden_vit_b_ori.npz").is_file():
        ap.error(f"3D SAM conformance fixture not found ({args.specs}): give --specs or set MUDUO_SAM3D_SPECS")
    model, inputs = golden_model(args.specs, dev)
    golden = dict(np.load(args.specs / "golden_vit_b_ori.npz"))
    bf16 = dev.startswith("cuda")  # bf16 autocast is only measured where it can pay off
    result["conformance_fp32"] = conformance(model, inputs, golden, dev)
    result["vit_b_ori_encoder_s_fp32"] = encoder_seconds(model, dev, args.repeats)
    if bf16:
        result["conformance_bf16_autocast"] = conformance(model, inputs, golden, dev, torch.bfloat16)
        result["vit_b_ori_encoder_s_bf16"] = encoder_seconds(model, dev, args.repeats, torch.bfloat16)
    model.image_encoder.set_fast_path(False)  # the published padded computation, same machine, same run
    result["padded_conformance_fp32"] = conformance(model, inputs, golden, dev)
    result["vit_b_ori_encoder_s_fp32_padded"] = encoder_seconds(model, dev, args.repeats)
    if bf16:
        result["vit_b_ori_encoder_s_bf16_padded"] = encoder_seconds(model, dev, args.repeats, torch.bfloat16)
    result["padded_first_click"] = click_latency(model, SAM_MED3D_CT, dev, 1)["first_click_s"]
    model.image_encoder.set_fast_path(True)
    result["speedup_fp32"] = result["vit_b_ori_encoder_s_fp32_padded"] / result["vit_b_ori_encoder_s_fp32"]
    # MuDuo: 2 unlabelled patches x 2 teachers, each patch encoded once per teacher per iteration
    result["muduo_teacher_encoder_s_per_iteration"] = 4 * result["vit_b_ori_encoder_s_fp32"]
    result["muduo_teacher_encoder_s_per_iteration_padded"] = 4 * result["vit_b_ori_encoder_s_fp32_padded"]
    if dev.startswith("cuda"):
        result["vit_b_ori_encoder_s_fp32_batch8"] = encoder_seconds(model, dev, args.repeats, batch=8)
        result["vit_b_ori_encoder_s_bf16_batch8"] = encoder_seconds(model, dev, args.repeats, torch.bfloat16, batch=8)
    result["vit_b_ori_click"] = click_latency(model, SAM_MED3D_CT, dev, 10)
    small = build_sam3d("standin_small").to(dev)
    result["standin_encoder_s_fp32"] = encoder_seconds(small, dev, args.repeats)
    result["standin_click"] = click_latency(small, STANDIN_CT, dev, 10)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with atomic_write(args.json) as tmp:
            tmp.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
