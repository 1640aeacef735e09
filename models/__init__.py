"""PyTorch models: DINOv2 encoder, NYUv2 depth decoders, temporal adapters, checkpoints, training."""

from .archs import ARCHS, DEPTH_HEADS, NYU_DEPTH_RANGE, PATCH_SIZE, Arch, center_padding, get_arch, patch_grid
from smoothdino.core.paths import smoothdino_home

from .checkpoints import OFFICIAL_FILES, CheckpointError, OfficialFile, official_file
from .decoder import DepthDecoder, load_decoder
from .preprocess import normalize_and_pad, preprocess
from .vit import DinoVisionTransformer, FeatureLevels, interpolate_pos_embed, load_encoder

__all__ = [
    "ARCHS", "DEPTH_HEADS", "NYU_DEPTH_RANGE", "PATCH_SIZE", "Arch", "center_padding", "get_arch", "patch_grid",
    "OFFICIAL_FILES", "CheckpointError", "OfficialFile", "official_file", "smoothdino_home",
    "DepthDecoder", "load_decoder", "normalize_and_pad", "preprocess",
    "DinoVisionTransformer", "FeatureLevels", "interpolate_pos_embed", "load_encoder",
]

from .adapter import ADAPTER_KINDS, PaperAdapter, TemporalAdapter, align_previous, build_adapter, load_adapter

__all__ += ["ADAPTER_KINDS", "PaperAdapter", "TemporalAdapter", "align_previous", "build_adapter", "load_adapter"]

from .torch_pipeline import TorchPipeline

__all__ += ["TorchPipeline"]
