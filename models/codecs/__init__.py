"""Pose codecs: training targets and decoders that share one definition per representation.

* :mod:`.transforms` -- ``Letterbox``, ``Crop``: frame <-> network-input point maps.
* :mod:`.heatmap` -- ``HeatmapParams``, ``HeatmapCodec``: Gaussian keypoint and limb maps.
* :mod:`.decoders` -- ``argmax_quarter``, ``dark``: torch heatmap decoders (ONNX-exportable).
* :mod:`.spm` / :mod:`.spm_decode` -- ``SPMParams``, ``SPMCodec``, ``SPMDecoded``: root + displacement (+ depth).
* :mod:`.volume` -- ``heatmap_volume``: PYSKL-compatible clip volumes [T,K|L,H,W] (numpy), ``PYSKL_LIMBS``.
* :mod:`.volume_torch` -- ``heatmap_volume_torch``: the same on a torch device.
"""

from models.codecs.decoders import argmax_quarter, dark, dark_kernel_size
from models.codecs.heatmap import HeatmapCodec, HeatmapParams
from models.codecs.spm import SPMCodec, SPMParams
from models.codecs.spm_decode import SPMDecoded
from models.codecs.transforms import Crop, Letterbox, apply_affine
from models.codecs.volume import PYSKL_LIMBS, heatmap_volume
from models.codecs.volume_torch import heatmap_volume_torch

__all__ = [
    "Crop",
    "HeatmapCodec",
    "HeatmapParams",
    "Letterbox",
    "PYSKL_LIMBS",
    "SPMCodec",
    "SPMDecoded",
    "SPMParams",
    "apply_affine",
    "argmax_quarter",
    "dark",
    "dark_kernel_size",
    "heatmap_volume",
    "heatmap_volume_torch",
]
