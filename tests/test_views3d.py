"""Whole-volume views for figures: projections and isosurface renders keep the volume's axes."""

import torch

from groupact.evaluate.views3d import looks_binary, max_projections, surface_renders


def _blob(d, h, w, side=16):
    x = torch.zeros(1, 1, side, side, side)
    x[0, 0, d - 2:d + 2, h - 2:h + 2, w - 2:w + 2] = 1.0
    return x


def test_max_projections_put_each_axis_where_the_docstring_says():
    x = _blob(3, 8, 12)
    p = max_projections(x)[0, 0]            # [along d | along h | along w], each 16 wide
    assert p.shape == (16, 48)
    along_d, along_h, along_w = p[:, :16], p[:, 16:32], p[:, 32:]
    assert along_d[6:10, 10:14].min() == 1 and along_d.sum() == 16      # (h, w) plane
    assert along_h[1:5, 10:14].min() == 1 and along_h.sum() == 16       # (d, w) plane
    assert along_w[1:5, 6:10].min() == 1 and along_w.sum() == 16        # (d, h) plane


def test_surface_renders_keep_left_right_and_up_down():
    """w runs to the right and h downwards, as in an image of a d-slice; empty volumes are
    blank. A transposed axis or a flipped sign moves the blob to the wrong half."""
    size = 64
    right = surface_renders(_blob(8, 8, 13), size)[0].mean(0) < 0.99
    left = surface_renders(_blob(8, 8, 3), size)[0].mean(0) < 0.99
    low = surface_renders(_blob(8, 13, 8), size)[0].mean(0) < 0.99
    cols = torch.arange(size).float()
    assert right.any() and left.any() and low.any()
    assert cols[right.nonzero()[:, 1]].mean() > size / 2 > cols[left.nonzero()[:, 1]].mean()
    assert low.nonzero()[:, 0].float().mean() > size / 2
    blank = surface_renders(torch.zeros(1, 1, 8, 8, 8), size)
    assert torch.equal(blank, torch.ones_like(blank))


def test_binary_data_is_told_by_its_values():
    assert looks_binary(_blob(8, 8, 8)) and not looks_binary(_blob(8, 8, 8) * 0.5)
