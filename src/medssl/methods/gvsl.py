"""``gvsl``: Geometric Visual Similarity Learning (He et al., CVPR 2023).

Alg. 1 of the supplement, batched: for pairs (A, B) of different images, A is
damaged by the Models Genesis transforms; the backbone encodes damaged A and
clean B; the affine and deformable heads estimate a DVF that registers A to B
(Eq. 8, Eq. 9); the loss is NCC(A warped, B) + λ_smooth · smoothness +
λ_mse · MSE(restored A, A).

Heads and fusion as the published code (github.com/YutingHe-list/GVSL,
``PyTorch/models/gvsl.py``, commit 77c89ba): the affine head convolves the
concatenated global maps, pools, and has four linear layers; the moving image's
local features are warped by the affine before the deformable head sees them
next to the fixed image's, and the resulting field (on the fixed grid) is
applied after the affine (:func:`~medssl.geometry.affine.fuse_fixed_frame`;
Eq. 9 of the supplement reads the field at the affinely moved position
instead, the published code does not).

Pairs: the published loader pairs two different whole images, never flipped,
and gives both the same spatial augmentation. The pre-training loader honours
:attr:`GVSL.pair_crop` and :attr:`GVSL.flip`: every image of a batch is cut at
one shared (relative) crop window and none is flipped, so a pair (x_i,
x_{i-1}) shows corresponding anatomy that an affine plus a smooth field can
register (independent crops and left-right flips made about half the pairs
mirror images).

Differences from the published code, on purpose: the affine matrix is built
from tensors (its head receives gradients), everything works at batch size > 1,
warping uses one coordinate convention (:mod:`medssl.geometry`) and the fused
DVF is applied once (one interpolation, not two); the image that is damaged and
restored is the moving one, A, as in Alg. 1 (the published code damages the
fixed one).
Pretext score (:meth:`GVSL.pretext_scores`): the organ Dice of every ordered
pair of held-out labelled volumes after warping the moving labels with the
predicted DVF, against the Dice without warping.

The smoothness term (MONAI ``DiffusionLoss``, squared spatial gradient) is put
on the deformable component only: the affine part is smooth by construction,
and its constant gradient (A − I) would otherwise pull every affine towards the
identity.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medssl.geometry.affine import affine_ddf, affine_matrix, fuse_fixed_frame
from medssl.geometry.warp import warp
from medssl.methods.base import PretrainMethod
from medssl.methods.pretext import Pretext, warped_label_dice
from medssl.nn.precision import fp32
from medssl.nn.heads import RestorationHead
from medssl.nn.registration_heads import AffineHead, DeformableHead
from medssl.transforms.genesis import GenesisDamage


class GVSL(PretrainMethod):
    """GVSL pre-training.

    Attributes:
        pair_crop: the pre-training loader cuts every image of a batch at one
            shared crop window (:func:`medssl.data.loaders.train_loader`).
        flip: the pre-training loader flips no image (the published code never does).

    Args:
        backbone: registry backbone (``{"global", "local"}`` features).
        seed: seeds the damage transforms and the spatial augmentation.
        ncc_window: local NCC window (9 in the paper).
        ncc_sigma: Gaussian pre-smoothing (voxels) of both images inside the
            similarity term; 0 is the paper's plain NCC. Measured on the
            phantoms: with plain NCC, a half-voxel constant shift of an image
            (pure interpolation blur, no alignment) raises local NCC from 0.53
            to 0.65, so the deformable head learns to blur A, NCC improves and
            label overlap gets worse; smoothing both images first removes most
            of that reward.
        w_ncc, w_smooth, w_mse: loss weights.
        augment_rotation, augment_scale: random affine augmentation of each
            image of the pair (radians, relative scale; defaults 5° and 5 %,
            the size of the phantoms' own inter-subject variation); 0 disables it.
        affine_hidden, deform_hidden: head widths.
        nonlinear_prob, local_shuffle_prob, paint_prob, inpaint_rate: the
            Models Genesis damage of image A.
    """

    pair_crop = True
    flip = False

    def __init__(self, backbone: nn.Module, seed: int = 0, ncc_window: int = 9, w_ncc: float = 1.0,
                 w_smooth: float = 1.0, w_mse: float = 1.0, augment_rotation: float = math.pi / 36,
                 augment_scale: float = 0.05, affine_hidden: int = 64, deform_hidden: int = 16,
                 nonlinear_prob: float = 0.9, local_shuffle_prob: float = 0.5, paint_prob: float = 0.9,
                 inpaint_rate: float = 0.2, ncc_sigma: float = 1.0, **args: Any) -> None:
        super().__init__(backbone, seed, **args)
        from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss
        from monai.networks.layers import GaussianFilter

        self.affine_head = AffineHead(backbone.global_channels, hidden=affine_hidden)
        self.deform_head = DeformableHead(backbone.local_channels, hidden=deform_hidden)
        self.restore_head = RestorationHead(backbone.local_channels, out_channels=1)
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_window)
        self.presmooth = GaussianFilter(3, ncc_sigma) if ncc_sigma > 0 else nn.Identity()
        self.smooth = DiffusionLoss()
        self.weights = {"ncc": w_ncc, "smooth": w_smooth, "mse": w_mse}
        self.augment = (augment_rotation, augment_scale)
        self.damage = GenesisDamage(nonlinear_prob=nonlinear_prob, local_shuffle_prob=local_shuffle_prob,
                                    paint_prob=paint_prob, inpaint_rate=inpaint_rate)
        self.damage.set_random_state(seed)
        self.generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------ geometry
    def register(self, feats_a: dict, feats_b: dict, shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        """Affine matrix, deformable field and fused DVF registering A (moving) to B (fixed).

        Eq. 8 for the matrix; as the published ``GVSL.forward`` (see the module
        docstring), A's local features are warped by the affine into B's frame
        before the deformable head compares them with B's, and the field is
        composed after the affine (:func:`~medssl.geometry.affine.fuse_fixed_frame`).
        The heads may run under bf16 autocast; the warp of the features and the
        fusion run in fp32 and every returned tensor is fp32.
        """
        matrix = self.affine_head(feats_a["global"], feats_b["global"], shape)
        with fp32(matrix, feats_a["local"]) as (matrix, local_a):
            local_a = warp(local_a, affine_ddf(matrix, tuple(local_a.shape[2:])))
        deformable = self.deform_head(local_a, feats_b["local"])
        with fp32(deformable) as (deformable,):
            return {"matrix": matrix, "deformable": deformable, "dvf": fuse_fixed_frame(matrix, deformable)}

    @torch.no_grad()
    def predict_dvf(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """DVF (voxels) that warps the clean images ``a`` onto ``b`` (both ``(B, 1, D, H, W)``)."""
        return self.register(self.backbone(a), self.backbone(b), tuple(a.shape[2:]))["dvf"]

    def pretext_scores(self, images: torch.Tensor, labels: torch.Tensor | None, n_classes: int) -> Pretext | None:
        """:func:`medssl.methods.pretext.warped_label_dice` of :meth:`predict_dvf`: the registration it trains."""
        return warped_label_dice(self.predict_dvf, images, labels, n_classes)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        rot, scale = self.augment
        if rot == 0 and scale == 0:
            return x
        b = x.shape[0]
        g = self.generator
        angles = (torch.rand(b, 3, generator=g) * 2 - 1) * rot
        scales = 1 + (torch.rand(b, 3, generator=g) * 2 - 1) * scale
        m = affine_matrix(angles, scales, torch.zeros(b, 6), torch.zeros(b, 3)).to(x)
        return warp(x, affine_ddf(m, tuple(x.shape[2:])))

    # ---------------------------------------------------------------- loss
    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Alg. 1 on a batch: pairs (x_i, x_{i+1 mod B}), so B >= 2 images give B pairs."""
        if batch.shape[0] < 2:
            raise ValueError(f"GVSL pairs the images of a batch: batch size must be >= 2, got {batch.shape[0]}")
        return self.pair_loss(batch, torch.roll(batch, 1, 0))

    def pair_loss(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Alg. 1 lines 4-11 for the pairs (a_i, b_i), averaged over the batch.

        Under data parallelism ``a`` and ``b`` are the global batch: the
        augmentation and damage are drawn for every pair (one random stream,
        identical on every rank) and this rank trains on its slice of the pairs.
        """
        with torch.no_grad():
            a = self._augment(a)
            b = self._augment(b)
            damaged = self.damage.batch(a)
            a, b, damaged = self.local(a), self.local(b), self.local(damaged)
        return self.prepared_loss(a, b, damaged)

    def prepared_loss(self, a: torch.Tensor, b: torch.Tensor,
                      damaged: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Alg. 1 lines 6-11 on augmented pairs: ``damaged`` is A after the Genesis damage.

        The networks (backbone and heads) may run under bf16 autocast; the
        fused field, the warp, the pre-smoothing, NCC, smoothness and MSE run
        in fp32 (:func:`medssl.nn.precision.fp32`): NCC is a windowed
        variance, which bf16 turns into noise.
        """
        fa, fb = self.backbone(damaged), self.backbone(b)
        reg = self.register(fa, fb, tuple(a.shape[2:]))
        restored_logits = self.restore_head(fa["local"])
        with fp32(restored_logits, a, b) as (restored_logits, a, b):
            moved = warp(a, reg["dvf"])
            l_ncc = self.ncc(self.presmooth(moved), self.presmooth(b))
            with warnings.catch_warnings():  # a torch indexing deprecation inside MONAI's DiffusionLoss
                warnings.simplefilter("ignore", UserWarning)
                l_smooth = self.smooth(reg["deformable"])
            l_mse = F.mse_loss(torch.sigmoid(restored_logits), a)
            w = self.weights
            loss = w["ncc"] * l_ncc + w["smooth"] * l_smooth + w["mse"] * l_mse
        return loss, {"ncc": float(l_ncc.detach()), "smooth": float(l_smooth.detach()),
                      "mse": float(l_mse.detach())}
