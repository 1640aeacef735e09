"""phase_shift on frames warped by known sub-pixel shifts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from smoothdino.edge.motion import phase_shift, to_grey
from smoothdino.edge.sources.synthetic import SyntheticScene


def _pair(shift, size=(480, 640), seed=1):
    """Two crops of one textured canvas, the second moved so that current(x) = previous(x - shift)."""
    scene = SyntheticScene(size[0] + 64, size[1] + 64, frames=1, seed=seed)
    canvas, _ = scene.canvases()
    h, w = size
    moved = cv2.warpAffine(canvas, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), canvas.shape[1::-1],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    crop = (slice(64, 64 + h), slice(64, 64 + w))
    return canvas[crop], moved[crop]


@pytest.mark.parametrize("shift", [(3.25, -1.5), (-7.6, 4.3), (0.4, 0.0), (12.8, 9.1)])
def test_subpixel_shift_full_resolution(shift):
    previous, current = _pair(shift)
    s = phase_shift(to_grey(previous), to_grey(current))
    assert abs(s.dx - shift[0]) <= 0.1 and abs(s.dy - shift[1]) <= 0.1, s
    assert 0.3 < s.confidence <= 1.0


def test_downscaled_shift_is_in_full_frame_pixels():
    shift = (9.4, -6.2)
    previous, current = _pair(shift)
    s = phase_shift(to_grey(previous, 2), to_grey(current, 2), downscale=2)
    assert abs(s.dx - shift[0]) <= 0.5 and abs(s.dy - shift[1]) <= 0.5, s


def test_identical_frames_full_confidence():
    a, _ = _pair((0, 0))
    s = phase_shift(to_grey(a), to_grey(a))
    assert abs(s.dx) < 1e-3 and abs(s.dy) < 1e-3 and s.confidence > 0.95


@pytest.mark.nyu
def test_scene_cut_between_nyu_scenes_has_low_confidence(nyu_root):
    a = cv2.cvtColor(cv2.imread(str(nyu_root / "basement_0001a_out" / "10.jpg")), cv2.COLOR_BGR2RGB)
    b = cv2.cvtColor(cv2.imread(str(nyu_root / "bedroom_0004_out" / "11.jpg")), cv2.COLOR_BGR2RGB)
    c = cv2.cvtColor(cv2.imread(str(nyu_root / "basement_0001a_out" / "11.jpg")), cv2.COLOR_BGR2RGB)
    assert phase_shift(to_grey(a), to_grey(b)).confidence < 0.1  # below the default min_confidence
    assert phase_shift(to_grey(a), to_grey(c)).confidence > 0.5  # consecutive frames


def test_synthetic_scene_motion_matches_its_declared_shift():
    scene = SyntheticScene(120, 160, frames=3, velocity=(2.5, -1.25))
    (f0, d0), (f1, _), _ = list(scene)
    s = phase_shift(to_grey(f0), to_grey(f1))
    assert abs(s.dx - scene.true_shift()[0]) < 0.3 and abs(s.dy - scene.true_shift()[1]) < 0.3  # small frame
    assert d0.min() >= 1.0 and d0.max() <= 6.5


def test_scene_cut_is_the_one_threshold():
    """Below min_confidence: a cut, and the adapter gets NO_SHIFT (confidence exactly 0); at or above it: kept."""
    from smoothdino.edge.motion import NO_SHIFT, Shift, scene_cut

    weak, strong = Shift(3.0, -1.0, 0.07), Shift(3.0, -1.0, 0.1)
    assert scene_cut(weak, 0.1) == (NO_SHIFT, True) and NO_SHIFT.confidence == 0.0
    assert scene_cut(weak, 0.05) == (weak, False)  # a lower --min-confidence keeps weaker matches
    assert scene_cut(strong, 0.1) == (strong, False)
