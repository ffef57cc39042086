"""Dataset readers for training (synthetic RGB-D, real photos) and zero-shot evaluation.

Training datasets are built from config dicts with :func:`build_dataset` and batched with
:func:`train.datasets.sampling.build_loader`; the sample contract is in ``train/datasets/common.py``.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from .common import KeyedDataset, SampleError
from .hypersim import HypersimDataset
from .procedural import ProceduralDataset, ProceduralRealDataset
from .real_photos import RealPhotosDataset
from .rgbd_folder import RGBDFolderDataset
from .sampling import KeyedConcat, StepBatchSampler, build_loader
from .vkitti import VKittiDataset

# type -> (class, required keys, optional keys). Every class also takes size and hflip.
DATASET_TYPES = {
    "hypersim": (HypersimDataset, ("root", "split"), ("min_depth", "max_depth")),
    "vkitti": (VKittiDataset, ("root",), ("split", "min_depth", "max_depth")),
    "rgbd_folder": (RGBDFolderDataset, ("root",), ("depth_scale", "min_depth", "max_depth")),
    "real_photos": (RealPhotosDataset, ("images", "labels"), ("eps",)),
    "procedural": (ProceduralDataset, (), ("length", "seed")),
    "procedural_real": (ProceduralRealDataset, (), ("length", "seed")),
}
# Keys a config may carry for the trainer (mixing probability, per-dataset training size, a display name);
# build_dataset ignores them (the trainer passes the size as the `size` argument).
META_KEYS = ("type", "probability", "size", "name")


def build_dataset(spec: dict, size: tuple[int, int] | None = None, hflip: bool = True) -> Dataset:
    """A training dataset from a config dict such as ``{"type": "hypersim", "root": ..., "split": ...}``.

    ``size`` ``(H, W)`` is the training size (None: the dataset's default, 480x640, or 352x1216 for vkitti);
    ``hflip`` enables the random horizontal flip. Unknown types, missing or unknown keys raise ValueError;
    missing folders and files raise ValueError naming the path, before any training starts.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a dataset spec must be a dict, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in DATASET_TYPES:
        raise ValueError(f"dataset `type` must be one of {sorted(DATASET_TYPES)}, got {kind!r}")
    cls, required, optional = DATASET_TYPES[kind]
    missing = [key for key in required if spec.get(key) in (None, "")]
    if missing:
        raise ValueError(f"dataset type {kind!r} needs the key(s) {missing}; allowed keys: "
                         f"{sorted(required + optional)}")
    unknown = sorted(set(spec) - set(required) - set(optional) - set(META_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for dataset type {kind!r}; allowed keys: "
                         f"{sorted(required + optional + META_KEYS)}")
    kwargs = {key: spec[key] for key in required + optional if key in spec}
    return cls(size=size, hflip=hflip, **kwargs)


__all__ = [
    "DATASET_TYPES", "build_dataset", "KeyedDataset", "SampleError", "HypersimDataset", "VKittiDataset",
    "RGBDFolderDataset", "RealPhotosDataset", "ProceduralDataset", "ProceduralRealDataset", "KeyedConcat",
    "StepBatchSampler", "build_loader",
]
