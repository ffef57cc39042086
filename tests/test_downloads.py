"""Downloads from the catalogue: the real ``huggingface_hub`` client against a loopback hub serving tiny models under
the real repository ids and pinned commits (fiffdepth_testkit.hub)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from fiffdepth_core.method import PredictConfig, predict_depth
from fiffdepth_core.weights import find_checkpoints, load_standalone
from fiffdepth_core.weights import download as dl
from fiffdepth_core.weights.catalogue import CATALOGUE, get_model
from fiffdepth_core.weights.download import MANIFEST, STAGING, ensure_model, installed_path, model_state
from fiffdepth_core.weights.hub_client import DownloadError
from fiffdepth_testkit.catalogue_repos import serve_catalogue
from fiffdepth_testkit.hub import LoopbackHub

SMALL = "lotus-depth-d-v1-1"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Every catalogue model's stand-in repository, written once."""
    root = tmp_path_factory.mktemp("repos")
    with LoopbackHub() as scratch:
        return serve_catalogue(scratch, root)


@pytest.fixture
def hub(repos, monkeypatch):
    server = LoopbackHub()
    for model in CATALOGUE:
        server.add_folder(model.repo, model.revision, repos[model.id])
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.stop()


def images(seed=0):
    torch.manual_seed(seed)
    return torch.rand(1, 3, 40, 56)


def depth_of(path, family="auto"):
    backbone = load_standalone(path, family=family)
    return predict_depth(backbone, images(), PredictConfig(processing_resolution=64))


def same_files_by_path(repo: Path, model, dest: Path) -> Path:
    """The files the catalogue names, copied straight from the served repository (the independent route)."""
    for name in model.files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / name, dest / name)
    return dest


@pytest.mark.parametrize("model", CATALOGUE, ids=lambda m: m.id)
def test_fresh_download_then_predict_equals_loading_the_same_files_by_path(model, hub, repos, tmp_path):
    seen = []
    folder = ensure_model(model, tmp_path / "models", progress=lambda done, total: seen.append((done, total)))
    assert folder == tmp_path / "models" / model.id
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == sorted([*model.files, MANIFEST]), "exactly the catalogue's files, nothing half-written"
    for name in model.files:  # byte for byte what the hub serves
        assert (folder / name).read_bytes() == (repos[model.id] / name).read_bytes()
    requested = [r.path for r in hub.requests]
    assert not any(word in p for p in requested for word in ("text_encoder", "tokenizer", "README", ".DS_Store"))
    total = sum(len((repos[model.id] / n).read_bytes()) for n in model.files)
    assert seen and seen[-1] == (total, total) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    by_path = same_files_by_path(repos[model.id], model, tmp_path / "by_path" / model.id)
    assert torch.equal(depth_of(folder), depth_of(by_path))
    assert load_standalone(folder).family.name == model.family, "detected from the downloaded files alone"


def test_an_installed_model_is_used_with_no_request_at_all(hub, tmp_path):
    model = get_model(SMALL)
    folder = ensure_model(model, tmp_path)
    before = len(hub.requests)
    assert ensure_model(model, tmp_path) == folder
    assert len(hub.requests) == before, "not even a HEAD"
    hub.stop()  # the hub is gone: still installed, still runs
    assert ensure_model(model, tmp_path) == folder
    assert depth_of(folder).shape == (1, 40, 56)


def test_offline_with_nothing_installed_names_the_model_the_folder_and_the_command(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as caught:
        ensure_model(get_model(SMALL), tmp_path / "models")
    message = str(caught.value)
    assert "\n" not in message
    for part in (SMALL, str(tmp_path / "models" / SMALL), "HF_HUB_OFFLINE",
                 f"python -m fiffdepth_core download {SMALL} --dest DIR"):
        assert part in message
    assert hub.requests == [], "offline means no request"


@pytest.mark.parametrize("times", [-1, 1], ids=["always", "once"])
def test_a_damaged_file_is_fetched_again_once_then_refused_and_never_installed(hub, repos, tmp_path, times):
    model = get_model(SMALL)
    hub.faults.damage[WEIGHTS] = times  # same length, one bit flipped: it would load without an error
    if times == 1:  # a flaky link: the second fetch is whole
        folder = ensure_model(model, tmp_path)
        assert (folder / WEIGHTS).read_bytes() == (repos[SMALL] / WEIGHTS).read_bytes()
    else:
        with pytest.raises(DownloadError, match=f"{WEIGHTS} .*does not match.*sha256.*refused"):
            ensure_model(model, tmp_path)
        assert installed_path(model, tmp_path) is None and not (tmp_path / SMALL).exists()
        assert find_checkpoints(tmp_path) == [], "nothing is offered as a checkpoint"
        assert not (tmp_path / STAGING / SMALL / WEIGHTS).exists(), "the damaged bytes are not kept"
    lfs_gets = [r for r in hub.requests if r.method == "GET" and r.path.startswith("/__lfs__/")
                and r.path.endswith(hashlib.sha256((repos[SMALL] / WEIGHTS).read_bytes()).hexdigest())]
    assert len(lfs_gets) == 2


def test_a_damaged_install_of_ours_is_seen_on_disk_and_replaced(hub, repos, tmp_path, monkeypatch):
    model = get_model(SMALL)
    folder = ensure_model(model, tmp_path)
    with open(folder / WEIGHTS, "r+b") as handle:
        handle.truncate(1000)  # cut short (a disk full, a copy interrupted)
    state, detail = model_state(model, tmp_path)
    assert state == "damaged" and str(folder / WEIGHTS) in detail and "1000 bytes" in detail
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="is not installed"):
        ensure_model(model, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert ensure_model(model, tmp_path) == folder
    assert (folder / WEIGHTS).read_bytes() == (repos[SMALL] / WEIGHTS).read_bytes()


def test_a_folder_placed_by_hand_is_used_as_is_and_never_touched(hub, repos, tmp_path):
    model = get_model(SMALL)
    by_hand = same_files_by_path(repos[SMALL], model, tmp_path / SMALL)
    assert ensure_model(model, tmp_path) == by_hand and hub.requests == []
    (by_hand / WEIGHTS).unlink()
    (by_hand / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match="was not made by FiffDepth's download, so it is left alone"):
        ensure_model(model, tmp_path)
    assert (by_hand / "notes.txt").read_text() == "mine" and hub.count("GET", "/resolve/") == 0


def test_a_missing_repository_and_a_missing_file_are_one_line_each(hub, tmp_path):
    model = get_model(SMALL)
    del hub.repos[model.repo]
    with pytest.raises(DownloadError, match=rf"repository {model.repo} not found \(HTTP 401\)"):
        ensure_model(model, tmp_path)
    other = get_model("lotus-depth-d-v1-0")
    del hub.repos[other.repo].files["vae/config.json"]
    with pytest.raises(DownloadError, match=r"has no vae/config.json \(the mirror may hold another revision"):
        ensure_model(other, tmp_path)
    assert find_checkpoints(tmp_path) == []


def test_a_file_that_404s_after_the_listing_is_one_line(hub, tmp_path):
    model = get_model(SMALL)
    hub.faults.status["vae/config.json"] = (404, -1)
    with pytest.raises(DownloadError) as caught:
        ensure_model(model, tmp_path)
    assert "vae/config.json" in str(caught.value) and "404" in str(caught.value) and "\n" not in str(caught.value)
    assert find_checkpoints(tmp_path) == [] and not (tmp_path / SMALL).exists()


def test_a_503_is_one_line_and_leaves_nothing_where_the_loader_looks(hub, tmp_path):
    hub.faults.status["api"] = (503, -1)
    with pytest.raises(DownloadError, match=r"HTTP 503 \(the hub is unavailable: try again later or use a mirror"):
        ensure_model(get_model(SMALL), tmp_path)
    assert find_checkpoints(tmp_path) == [] and hub.count("GET", "/resolve/") == 0


def test_a_gated_repository_needs_hf_token(hub, repos, tmp_path, monkeypatch):
    model = get_model(SMALL)
    hub.add_folder(model.repo, model.revision, repos[SMALL], gated_token="hf_fiffdepth_test")
    with pytest.raises(DownloadError, match=r"is gated \(accept its terms.*HF_TOKEN"):
        ensure_model(model, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_fiffdepth_test")
    assert ensure_model(model, tmp_path).is_dir()
    assert all(r.authorization == "Bearer hf_fiffdepth_test" for r in hub.requests[-3:] if "/resolve/" in r.path)


def test_not_enough_disk_is_found_before_the_first_byte(hub, tmp_path, monkeypatch):
    real = shutil.disk_usage

    def nearly_full(path):
        return real(path)._replace(free=10 * 1024**2)

    monkeypatch.setattr(dl.shutil, "disk_usage", nearly_full)
    with pytest.raises(DownloadError, match=rf"not enough disk space for {SMALL} in {tmp_path}: it needs .* more and "
                                            r"10 MB are free"):
        ensure_model(get_model(SMALL), tmp_path)
    assert hub.count("GET", "/resolve/") == 0 and hub.count("GET", "/__lfs__/") == 0
    assert find_checkpoints(tmp_path) == []


def test_a_cancel_stops_the_download_and_the_next_run_resumes_with_a_range(hub, repos, tmp_path, monkeypatch):
    import huggingface_hub.constants

    model = get_model("lotus-depth-d-v1-0")
    size = (repos[model.id] / WEIGHTS).stat().st_size
    # the client writes what it receives in 10 MB pieces; the tiny weights (4.5 MB) need smaller ones to arrive in parts
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    hub.faults.delay = 0.02  # about 3 MB/s
    staging = tmp_path / STAGING / model.id

    def cancel_midway():
        if dl._bytes_in(staging) > size // 3:
            raise InterruptedError("cancelled by the host")

    with pytest.raises(InterruptedError):
        ensure_model(model, tmp_path, interrupt=cancel_midway)
    assert model_state(model, tmp_path)[0] == "partial" and find_checkpoints(tmp_path) == []
    hub.faults.delay = 0.0
    folder = ensure_model(model, tmp_path)
    assert (folder / WEIGHTS).read_bytes() == (repos[model.id] / WEIGHTS).read_bytes()
    ranges = [r.range for r in hub.requests if r.path.startswith("/__lfs__/") and r.range]
    assert any(int(r.split("=")[1].split("-")[0]) > 0 for r in ranges), f"resumed with a Range: {ranges}"
    assert hub.bytes_sent[WEIGHTS] < 2 * size


def test_the_loopback_hub_answers_the_clients_own_listing_and_snapshot_calls(hub, repos, tmp_path):
    """The stand-in hub speaks what the hub client reads: the tree listing (sizes, LFS sha256) and a
    snapshot_download, so what the tests above show is what a real endpoint would give."""
    import huggingface_hub

    model = get_model(SMALL)
    api = huggingface_hub.HfApi(endpoint=hub.url)
    tree = {e.path: e for e in api.list_repo_tree(model.repo, revision=model.revision, recursive=True)}
    weights = tree[WEIGHTS]
    assert weights.size == (repos[SMALL] / WEIGHTS).stat().st_size
    assert weights.lfs.sha256 == hashlib.sha256((repos[SMALL] / WEIGHTS).read_bytes()).hexdigest()
    assert "unet" in tree and "text_encoder/config.json" in tree  # folders too, and the files we never fetch
    out = huggingface_hub.snapshot_download(model.repo, revision=model.revision, allow_patterns=["vae/*"],
                                            local_dir=str(tmp_path / "snap"), endpoint=hub.url)
    got = sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert got == ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    with pytest.raises(huggingface_hub.errors.EntryNotFoundError):
        huggingface_hub.hf_hub_download(model.repo, "nope.json", revision=model.revision, endpoint=hub.url,
                                        local_dir=str(tmp_path / "x"))


HOST_PYTHONS = {"FORGE_PYTHON": "Forge (huggingface_hub 0.26)", "A1111_PYTHON": "AUTOMATIC1111 (huggingface_hub 0.36)",
                "COMFYUI_PYTHON": "a fresh ComfyUI venv (huggingface_hub 2.x)"}


@pytest.mark.slow
@pytest.mark.parametrize("variable", list(HOST_PYTHONS))
def test_these_downloads_pass_with_each_hosts_huggingface_hub(variable):
    """This file again, run by a host's own Python: its huggingface_hub version is the one the downloads meet there."""
    import os
    import subprocess
    import sys

    python = os.environ.get(variable)
    if not python:
        pytest.skip(f"set {variable} to the Python of {HOST_PYTHONS[variable]} to run the downloads with its hub")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_ENDPOINT", "HF_HUB_OFFLINE")}
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", __file__],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert " passed" in done.stdout.splitlines()[-1]
