"""The catalogue on the command line: `models`, `download`, and `predict --checkpoint <model>` (loopback hub)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fiffdepth_core.app.cli import main
from fiffdepth_core.weights.catalogue import CATALOGUE, get_model
from fiffdepth_core.weights.download import STAGING
from fiffdepth_testkit.catalogue_repos import write_repo
from fiffdepth_testkit.hub import LoopbackHub

ROOT = Path(__file__).resolve().parents[1]
SMALL = get_model("lotus-depth-d-v1-1")
BIG = get_model("lotus-depth-d-v1-0")
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("repos")
    return {m.id: write_repo(m, root / m.id, 200 + i) for i, m in enumerate((SMALL, BIG))}


@pytest.fixture
def hub(repos, monkeypatch):
    server = LoopbackHub()
    for model in (SMALL, BIG):
        server.add_folder(model.repo, model.revision, repos[model.id])
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.stop()


def photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_download_installs_into_dest_and_models_lists_it(hub, tmp_path, capsys):
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert all(m.id in listing for m in CATALOGUE) and "installed in" not in listing and hub.requests == []
    assert main(["download", SMALL.repo, "--dest", str(tmp_path), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / SMALL.id)
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    assert f"installed in {tmp_path / SMALL.id}" in capsys.readouterr().out


def test_predict_with_a_catalogue_id_downloads_once_and_equals_the_path(hub, tmp_path):
    image = photo(tmp_path / "in.png")
    common = [str(image), "--format", "npy", "--processing-resolution", "64", "-q"]
    assert main(["predict", *common, "--checkpoint", SMALL.id, "--models-dir", str(tmp_path / "models"),
                 "--output-dir", str(tmp_path / "a")]) == 0
    count = len(hub.requests)
    assert count > 0 and (tmp_path / "models" / SMALL.id / WEIGHTS).is_file()
    assert main(["predict", *common, "--checkpoint", SMALL.repo, "--models-dir", str(tmp_path / "models"),
                 "--output-dir", str(tmp_path / "b")]) == 0
    assert len(hub.requests) == count, "the second run makes no request"
    assert main(["predict", *common, "--checkpoint", str(tmp_path / "models" / SMALL.id),
                 "--output-dir", str(tmp_path / "c")]) == 0
    a, b, c = (np.load(tmp_path / d / "in.npy") for d in "abc")
    assert np.array_equal(a, c) and np.array_equal(b, c)


def test_download_errors_are_one_line(hub, tmp_path, monkeypatch, caplog):
    assert main(["download", "lotus-g", "--dest", str(tmp_path)]) == 2
    assert "not in the catalogue" in caplog.text and "lotus-depth-d-v1-0" in caplog.text
    caplog.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", SMALL.id, "--dest", str(tmp_path)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "HF_HUB_OFFLINE" in errors[0]
    assert hub.requests == []


DOWNLOAD = ("import sys, huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 65536; "  # 4.5 MB arrive in pieces
            "from fiffdepth_core.app.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.slow
def test_a_download_killed_half_way_resumes_where_it_stopped(hub, repos, tmp_path):
    size = (repos[BIG.id] / WEIGHTS).stat().st_size
    hub.faults.delay = 0.05  # about 1.3 MB/s
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", DOWNLOAD, "download", BIG.id, "--dest", str(tmp_path), "-q"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staging = tmp_path / STAGING / BIG.id / ".partial"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        parts = [p for p in staging.glob("unet%2F*.part")] if staging.is_dir() else []
        if parts and parts[0].stat().st_size > size // 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)  # no clean-up code runs
    proc.wait()
    kept = parts[0].stat().st_size
    assert not (tmp_path / BIG.id).exists(), "a partial model is never where the loader looks"
    hub.faults.delay = 0.0
    done = subprocess.run([sys.executable, "-c", DOWNLOAD, "download", BIG.id, "--dest", str(tmp_path), "-q"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / BIG.id / WEIGHTS).read_bytes() == (repos[BIG.id] / WEIGHTS).read_bytes()
    resumed = [r.range for r in hub.requests if r.path.startswith("/__lfs__/") and r.range]
    assert resumed == [f"bytes={kept}-"], "the second run asked only for the rest"


@pytest.mark.slow
def test_proxies_from_the_environment_carry_every_request(hub, tmp_path):
    """An endpoint that only resolves through the proxy: the download works only if the client uses HTTP_PROXY."""
    port = hub.url.rsplit(":", 1)[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": f"http://hub.fiffdepth.invalid:{port}",
           "HTTP_PROXY": hub.url, "http_proxy": hub.url, "NO_PROXY": "", "no_proxy": ""}
    done = subprocess.run([sys.executable, "-m", "fiffdepth_core", "download", SMALL.id, "--dest", str(tmp_path), "-q"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    to_hub = [r for r in hub.requests if "/resolve/" in r.path or r.path.startswith("/api/models/")]
    assert to_hub and all(r.proxied for r in to_hub)


def test_the_quickstart_probe_says_whether_the_hub_answers(hub, tmp_path, monkeypatch, capsys):
    from fiffdepth_core.weights import probe

    monkeypatch.setenv("FIFFDEPTH_MODELS", str(tmp_path))
    assert probe.main([SMALL.id]) == 0 and hub.count("GET", "/api/models/") == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert probe.main([SMALL.id]) == 1 and capsys.readouterr().out.strip() == "HF_HUB_OFFLINE is set"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    url = hub.url
    hub.stop()  # nothing listens there any more
    assert probe.main([SMALL.id]) == 1
    said = capsys.readouterr().out.strip()
    assert said.startswith(f"the Hugging Face Hub at {url} does not answer (") and "\n" not in said
