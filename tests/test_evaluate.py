"""train/evaluate.py end to end on a generated mini benchmark in Marigold's NYUv2 layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fiffdepth_core.fileio.writers import write_exr, write_npy, write_png16
from fiffdepth_core.method.metrics import evaluate_depth
from fiffdepth_core.method.predictor import PredictConfig, predict_depth
from train import evaluate

ROOT = Path(__file__).resolve().parents[1]
IDS = ["test/kitchen_0004/rgb_0001", "test/office_0005/rgb_0009", "test/office_0005/rgb_0010"]
H, W = 96, 128


def make_nyu(root: Path) -> Path:
    """3 images in the NYUv2 test layout (uint16 mm depth with holes) and a Marigold-format split list."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    lines = []
    for k, sample_id in enumerate(IDS):
        rgb_path = root / f"{sample_id}.png"
        depth_rel = sample_id.replace("rgb_", "depth_") + ".png"
        rgb_path.parent.mkdir(parents=True, exist_ok=True)
        rgb = (127 + 100 * np.sin(xx / (9 + k))[..., None] * np.array([1, 0.5, -0.7])).astype(np.uint8)
        cv2.imwrite(str(rgb_path), rgb + rng.integers(0, 20, rgb.shape, dtype=np.uint8))
        depth_mm = (1000 + 40 * yy + 10 * xx * (k + 1)).astype(np.uint16)
        depth_mm[5 * k:5 * k + 7, 50:60] = 0  # holes
        cv2.imwrite(str(root / depth_rel), depth_mm)
        lines.append(f"{sample_id}.png {depth_rel} {depth_rel.replace('depth_', 'filled_')}")
    (root / "split.txt").write_text("\n".join(lines) + "\n")
    return root / "split.txt"


def ground_truth(root: Path, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """GT in metres and the valid mask, computed here independently of the readers."""
    depth_mm = cv2.imread(str(root / (sample_id.replace("rgb_", "depth_") + ".png")), cv2.IMREAD_UNCHANGED)
    depth = (depth_mm / 1000.0).astype(np.float32)  # Marigold keeps GT in float32
    crop = np.zeros((H, W), dtype=bool)
    crop[9:94, 8:120] = True  # Eigen crop 45:471, 41:601 scaled by 96/480 and 128/640
    return depth, crop & (depth > 1e-3) & (depth < 10.0)


def direct_metrics(backbone, root: Path) -> list[dict]:
    rows = []
    for sample_id in IDS:
        rgb = cv2.imread(str(root / f"{sample_id}.png"))[:, :, ::-1] / np.float32(255.0)
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].contiguous()  # [1,3,H,W]
        with torch.inference_mode():
            pred = predict_depth(backbone, image, PredictConfig(processing_resolution=0))[0].numpy()
        gt, valid = ground_truth(root, sample_id)
        rows.append(evaluate_depth(pred, gt, valid, 1e-3, 10.0, "least_square"))
    return rows


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyu")
    return root, make_nyu(root)


def run(bench, out: Path, *extra: str) -> dict:
    root, split = bench
    assert evaluate.main(["--dataset", "nyuv2", "--data-root", str(root), "--split", str(split),
                          "--output-dir", str(out), "--no-progress", *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_checkpoint_run_equals_predictor_plus_metrics_and_resumes(bench, tmp_path, tiny_checkpoint, tiny_backbone,
                                                                   monkeypatch, capsys):
    out = tmp_path / "out"
    results = run(bench, out, "--checkpoint", str(tiny_checkpoint), "--name", "tiny", "--per-image",
                  "--gallery", "2")
    direct = direct_metrics(tiny_backbone, bench[0])
    # Two loads of one checkpoint differ by ~1e-6 in the UNet output on CPU (kernel choice), hence rel=1e-6.
    for key in ("abs_rel", "delta1", "rmse", "silog"):
        assert results["metrics"][key] == pytest.approx(np.mean([r[key] for r in direct]), rel=1e-6)
    assert results["metrics"]["images"] == 3 and results["counts"]["listed"] == 3
    assert results["protocol"]["processing_resolution"] == 0 and results["protocol"]["alignment"] == "least_square"
    assert [r["method"] for r in results["reference"]][:2] == ["FiffDepth (paper)", "Marigold v1.0 (50 steps x 10)"]

    markdown = (out / "results.md").read_text()
    abs_rel, delta1 = (results["metrics"][k] * 100 for k in ("abs_rel", "delta1"))
    assert f"| **tiny** | {abs_rel:.2f} | {delta1:.2f} | 3 | this run |" in markdown
    assert "| FiffDepth (paper) | 4.4 | 97.8 | 654 |" in markdown and "Partial run" in markdown
    assert markdown in capsys.readouterr().out

    per_image = (out / "per_image.csv").read_text().splitlines()
    assert per_image[0].startswith("sample_id,valid_pixels,scale,shift,abs_rel") and len(per_image) == 4
    gallery = sorted((out / "gallery").glob("*.png"))
    worst = sorted(zip(IDS, direct), key=lambda pair: -pair[1]["abs_rel"])
    assert [p.name.split("_", 2)[2] for p in gallery] == [i.replace("/", "__") + ".png" for i, _ in worst[:2]]
    assert cv2.imread(str(gallery[0])).shape == (H, 4 * W, 3)
    assert sorted(p.relative_to(out / "predictions").as_posix() for p in (out / "predictions").rglob("*.npy")) == \
        sorted(f"{i}.npy" for i in IDS)

    def no_model(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(evaluate, "predict_depth", no_model)  # a second run must not predict again
    again = run(bench, out, "--checkpoint", str(tiny_checkpoint), "--name", "tiny")
    assert again["metrics"] == results["metrics"]
    with pytest.raises(ValueError, match="--recompute"):  # another setting never mixes into this cache
        run(bench, out, "--checkpoint", str(tiny_checkpoint), "--processing-resolution", "64")


def write_predictions(bench, folder: Path, transform, formats=("npy", "exr", "png16")) -> None:
    for sample_id, fmt in zip(IDS, formats):
        gt, _ = ground_truth(bench[0], sample_id)
        pred = transform(gt).astype(np.float32)
        suffix = {"npy": ".npy", "exr": ".exr", "png16": "_depth16.png"}[fmt]
        writer = {"npy": write_npy, "exr": write_exr, "png16": write_png16}[fmt]
        writer(folder / f"{sample_id}{suffix}", pred)


def test_prediction_folder_in_any_format(bench, tmp_path):
    preds = tmp_path / "preds"
    write_predictions(bench, preds, lambda gt: (gt - 0.2) / 12.0)  # an affine map of the GT, in [0,1]
    results = run(bench, tmp_path / "out", "--predictions", str(preds))
    assert results["metrics"]["images"] == 3 and results["metrics"]["delta1"] == 1.0
    assert results["metrics"]["abs_rel"] < 2e-4  # the 16-bit PNG is quantised; .npy/.exr are exact
    assert results["source"] == {"predictions": str(preds.resolve())}


def test_disparity_predictions_need_disparity_alignment(bench, tmp_path):
    preds = tmp_path / "preds"
    write_predictions(bench, preds, lambda gt: np.where(gt > 0, 3.0 / np.maximum(gt, 1e-3) + 0.1, 0.0),
                      formats=("npy",) * 3)
    disparity = run(bench, tmp_path / "a", "--predictions", str(preds), "--alignment", "least_square_disparity")
    depth = run(bench, tmp_path / "b", "--predictions", str(preds))
    assert disparity["metrics"]["abs_rel"] < 1e-6 and depth["metrics"]["abs_rel"] > 0.01


def test_missing_and_misshapen_predictions(bench, tmp_path):
    preds = tmp_path / "preds"
    write_predictions(bench, preds, lambda gt: gt, formats=("npy",) * 3)
    (preds / f"{IDS[1]}.npy").unlink()
    with pytest.raises(FileNotFoundError, match="--on-missing skip"):
        run(bench, tmp_path / "a", "--predictions", str(preds))
    results = run(bench, tmp_path / "b", "--predictions", str(preds), "--on-missing", "skip", "--limit", "1")
    assert results["counts"]["missing_predictions"] == 1 and results["metrics"]["images"] == 1
    assert "Partial run" in (tmp_path / "b/results.md").read_text()
    write_npy(preds / f"{IDS[0]}.npy", np.ones((H, W + 1)), overwrite=True)
    with pytest.raises(ValueError, match=rf"prediction \({H}, {W + 1}\).*ground truth \({H}, {W}\)"):
        run(bench, tmp_path / "c", "--predictions", str(preds), "--on-missing", "skip")


def test_boundary_set_reports_f1_beside_the_published_rows(tmp_path):
    data, preds = tmp_path / "ibims", tmp_path / "preds"
    depth = np.full((16, 16), 8.0)
    depth[5:11, 4:12] = 2.0  # a near box: edges in all four directions
    (data / "rgb").mkdir(parents=True)
    (data / "depth").mkdir()
    (data / "mask_invalid").mkdir()
    cv2.imwrite(str(data / "rgb/box_01.png"), np.zeros((16, 16, 3), dtype=np.uint8))
    cv2.imwrite(str(data / "depth/box_01.png"), np.round(depth * 65535 / 50).astype(np.uint16))
    cv2.imwrite(str(data / "mask_invalid/box_01.png"), np.full((16, 16), 255, dtype=np.uint8))
    write_npy(preds / "rgb/box_01.npy", depth / 10.0)
    assert evaluate.main(["--dataset", "ibims", "--data-root", str(data), "--predictions", str(preds),
                          "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert results["metrics"]["boundary_f1"] == pytest.approx(1.0)
    markdown = (tmp_path / "out/results.md").read_text()
    assert "iBims-1 boundary F1 ↑" in markdown and "| Depth Pro | 0.176 |" in markdown


def test_batches_group_consecutive_samples_of_one_size(tmp_path):
    from train.datasets.eval_sets import DataSource, get_eval_set, load_samples

    for n, (h, w) in enumerate([(6, 8), (6, 8), (8, 6), (6, 8)]):
        (tmp_path / "scene0000_00/color").mkdir(parents=True, exist_ok=True)
        (tmp_path / "scene0000_00/depth").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / f"scene0000_00/color/{n}.jpg"), np.zeros((h, w, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / f"scene0000_00/depth/{n}.png"), np.ones((h, w), dtype=np.uint16))
    eval_set, source = get_eval_set("scannet"), DataSource(tmp_path)
    samples, _ = load_samples(eval_set, source)
    sizes = [[item.depth.shape for item in batch] for batch in evaluate.batches(eval_set, source, samples, 4)]
    assert sizes == [[(6, 8), (6, 8)], [(8, 6)], [(6, 8)]]
    assert [len(b) for b in evaluate.batches(eval_set, source, samples, 1)] == [1, 1, 1, 1]


@pytest.mark.parametrize("argv, flag", [
    (["--dataset", "nyu"], "--dataset"),
    (["--dataset", "nyuv2", "--limit", "0"], "--limit"),
    (["--dataset", "nyuv2", "--alignment", "median"], "--alignment"),
    (["--dataset", "nyuv2", "--on-missing", "ignore"], "--on-missing"),
])
def test_bad_flags_name_the_flag_and_the_choices(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main([*argv, "--data-root", str(tmp_path), "--predictions", str(tmp_path)])
    assert flag in capsys.readouterr().err


@pytest.mark.slow
def test_runs_as_a_script_from_anywhere(bench, tmp_path):
    preds = tmp_path / "preds"
    write_predictions(bench, preds, lambda gt: gt, formats=("npy",) * 3)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(ROOT / "train/evaluate.py"), "--dataset", "nyuv2", "--data-root",
                           str(bench[0]), "--split", str(bench[1]), "--predictions", str(preds), "--output-dir",
                           str(tmp_path / "out"), "--no-progress"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| **preds** | 0.00 | 100.00 | 3 | this run |" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "train/evaluate.py"), "--dataset", "nyuv2", "--data-root",
                          str(tmp_path / "absent"), "--predictions", str(preds)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--data-root" in bad.stderr and "Traceback" not in bad.stderr


def test_a_re_exported_checkpoint_invalidates_the_cache(bench, tmp_path, tiny_checkpoint):
    import os
    import shutil

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, checkpoint)
    out = tmp_path / "out"
    run(bench, out, "--checkpoint", str(checkpoint), "--limit", "1")
    run(bench, out, "--checkpoint", str(checkpoint), "--limit", "1")  # unchanged weights: the cache is reused
    weights = checkpoint / "unet" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "re-exported"
    with pytest.raises(ValueError, match="weights"):
        run(bench, out, "--checkpoint", str(checkpoint), "--limit", "1")
