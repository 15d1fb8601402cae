"""Spatial transformations shared by every method.

One convention everywhere: a displacement field (DDF) ``u`` has shape
``(B, 3, D, H, W)`` in voxel units, channel ``k`` along spatial axis ``k``,
and warping samples ``out(p) = in(p + u(p))`` with trilinear interpolation on
voxel centres (MONAI ``Warp``, ``grid_sample`` with ``align_corners=True``
under the hood).
"""
