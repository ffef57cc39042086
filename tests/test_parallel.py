"""Sharding, the launcher environment, one-process behaviour of the process group, and the prefetching reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiffdepth_core.app.parallel import Processes, ProcessGroup, from_env
from fiffdepth_core.app.prefetch import image_batches


@pytest.mark.parametrize("count, world", [(10, 3), (2, 4), (0, 2), (7, 1), (64, 8)])
def test_shards_are_contiguous_balanced_and_cover_everything_once(count, world):
    items = [f"img{i:03d}" for i in range(count)]
    shards = [Processes(rank, world).shard(items) for rank in range(world)]
    assert [x for shard in shards for x in shard] == items  # in rank order, the input again: nothing twice
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert shards == [Processes(rank, world).shard(items) for rank in range(world)]  # deterministic


@pytest.mark.parametrize("count, world, align", [(7, 2, 2), (10, 3, 4), (5, 4, 2), (64, 8, 3)])
def test_aligned_shards_cut_at_multiples_of_the_batch(count, world, align):
    items = list(range(count))
    shards = [Processes(rank, world).shard(items, align) for rank in range(world)]
    assert [x for shard in shards for x in shard] == items
    starts = [shard[0] for shard in shards if shard]
    assert all(start % align == 0 for start in starts)  # every block starts where one process starts a batch
    runs = [-(-len(shard) // align) for shard in shards]
    assert max(runs) - min(runs) <= 1 and runs == sorted(runs, reverse=True)


def test_layout_from_the_launcher_environment():
    assert from_env({}) == Processes(0, 1, 0, 1)
    torchrun = {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    layout = from_env(torchrun)
    assert layout == Processes(5, 8, 1, 4) and not layout.is_main and layout.distributed
    assert from_env({"WORLD_SIZE": "2", "RANK": "1"}) == Processes(1, 2, 1, 2)


@pytest.mark.parametrize("env, name", [({"WORLD_SIZE": "zero"}, "WORLD_SIZE"), ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
                                       ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"),
                                       ({"LOCAL_RANK": "-1"}, "LOCAL_RANK")])
def test_bad_launcher_variables_are_named(env, name):
    with pytest.raises(ValueError, match=name):
        from_env(env)


def test_one_process_needs_no_process_group(monkeypatch):
    import torch.distributed as dist

    with ProcessGroup(Processes(), "cpu") as group:
        assert group.gather({"a": 1}) == [{"a": 1}] and group.sum(5) == 5
        shown = []

        class Bar:
            def update(self, n):
                shown.append(n)

            def close(self):
                shown.append("closed")

        progress = group.progress(3, Bar())
        progress.update(2)
        progress.update(1)
        progress.close()
        assert shown == [2, 1, "closed"]
    assert not dist.is_initialized()
    assert Processes().device("auto") == "auto" and Processes(1, 2, 1, 2).device("cpu") == "cpu"


def _write_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def _decode(path):
    from fiffdepth_core.fileio.images import load_image
    from fiffdepth_core.method.image import to_rgb

    return to_rgb(load_image(path)[None])[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_group_consecutive_sizes_in_order_with_or_without_workers(tmp_path, workers):
    rng = np.random.default_rng(0)
    sizes = [(8, 12), (8, 12), (8, 12), (10, 6), (8, 12), (8, 12)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(tmp_path / f"{i}.png")
        _write_png(paths[-1], rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    order = paths[:2] + [tmp_path / "bad.png"] + paths[2:]
    failed = []
    batches = list(image_batches(order, _decode, batch_size=2, workers=workers,
                                 on_error=lambda path, message: failed.append(path)))
    assert [[p.name for p in names] for names, _ in batches] == [["0.png", "1.png"], ["2.png"], ["3.png"],
                                                                  ["4.png", "5.png"]]
    assert failed == [tmp_path / "bad.png"]
    for names, batch in batches:
        expected = torch.stack([_decode(p) for p in names])
        assert torch.equal(batch, expected)


def test_a_bad_image_without_a_handler_stops_with_its_name(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        list(image_batches([tmp_path / "bad.png"], _decode, batch_size=1, workers=0))
