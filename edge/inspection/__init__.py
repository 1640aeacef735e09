"""What `smoothdino inspect` computes: where the encoder's cells lie in the frame (grid), feature PCA images (pca),
frame-to-frame stability once the camera motion is taken out (stability), line plots drawn with OpenCV
(lineplot), and the per-sequence driver that writes them (sequence). Reads the frame method; nothing imports it
back."""

from .grid import FeatureGrid
from .lineplot import Panel, Series, line_plot
from .pca import FeaturePCA
from .sequence import inspect_sequence, stability_table
from .stability import (
           StabilityTracker,
           aligned_depth_change_mm,
           aligned_feature_similarity,
)

__all__ = ["FeatureGrid", "FeaturePCA", "Panel", "Series", "StabilityTracker", "aligned_depth_change_mm",
           "aligned_feature_similarity", "inspect_sequence", "line_plot", "stability_table"]
