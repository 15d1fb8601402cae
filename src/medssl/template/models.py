"""Template-transformer segmentation models (Diffeomorphic Template Transformers, Sec. 4-5).

The four rows of the paper's Table 2, built by :func:`build`:

* ``unet``: "U-Net (direct estimation)", a sigmoid probability map.
* ``stt``: spatial template transformer with a fixed prior (Lee et al.
  2019 + the prior of Eq. 5): the combined field is used as the
  displacement itself, without integration.
* ``diffeo_fixed``: diffeomorphic template transformer, fixed prior.
* ``diffeo_trained``: the same with ``mu``, ``diag(Sigma)`` and ``beta`` trained.

The transformer (Sec. 4): ``V = f([I, S]) = {v_t}_{t=1..T}`` (bounded by
``alpha * tanh``, Sec. 5.1), folded into one velocity with the BCH formula
(Eq. 4, order 2 in the paper), integrated by scaling and squaring (Alg. 1),
and the prior ``S`` is resampled: ``O = T_Phi(G)(S)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from medssl.geometry.bch import bch_combine
from medssl.geometry.integrate import METHODS, integrate
from medssl.geometry.prior import PriorShape
from medssl.geometry.warp import warp

MODELS = ("unet", "stt", "diffeo_fixed", "diffeo_trained")


def _conv_block(cin: int, cout: int, norm: str, slope: float) -> nn.Sequential:
    act = ("LeakyReLU", {"negative_slope": slope})
    return nn.Sequential(Convolution(3, cin, cout, act=act, norm=norm),
                         Convolution(3, cout, cout, act=act, norm=norm))


class TemplateNet(nn.Module):
    """3D U-Net of Sec. 5.1: instance norm, LeakyReLU 0.2, linear (trilinear) up-sampling.

    ``len(features) - 1`` down/up levels (the paper uses 4, i.e. 5 widths);
    down-sampling by max-pooling, up-sampling by trilinear interpolation
    followed by concatenation with the skip and a double conv. The output is
    bounded by ``alpha * tanh`` (Sec. 5.1, ``alpha = 256``); ``alpha=None``
    leaves raw logits (the U-Net baseline).

    Args:
        in_channels: input channels (2: image and prior, Sec. 4).
        out_channels: output channels (``3 * T`` velocity components).
        features: channel widths per level, at least 2 values.
        norm: MONAI norm name (``"instance"``).
        negative_slope: LeakyReLU slope (0.2).
        alpha: bound of the outputs, ``> 0``, or ``None`` for no bound.
        final_init_std: std of the normal init of the last conv (bias 0);
            ``0`` makes the output exactly zero at initialisation.

    Raises:
        ValueError: on bad channel counts, features, alpha or init std.
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 12,
                 features: Sequence[int] = (16, 32, 64, 128, 256), norm: str = "instance",
                 negative_slope: float = 0.2, alpha: float | None = 256.0,
                 final_init_std: float = 1e-5) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        feats = list(features) if isinstance(features, Sequence) else None
        if not feats or len(feats) < 2 or any(isinstance(f, bool) or not isinstance(f, int) or f < 1
                                              for f in feats):
            raise ValueError(f"features must be a sequence of >= 2 positive ints, got {features!r}")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                  or not math.isfinite(alpha) or alpha <= 0):
            raise ValueError(f"alpha must be a positive finite number or None, got {alpha!r}")
        if not isinstance(final_init_std, (int, float)) or final_init_std < 0:
            raise ValueError(f"final_init_std must be a number >= 0, got {final_init_std!r}")
        self.alpha = None if alpha is None else float(alpha)
        self.levels = len(feats) - 1
        self.down = nn.ModuleList([_conv_block(in_channels, feats[0], norm, negative_slope)])
        for i in range(1, len(feats)):
            self.down.append(_conv_block(feats[i - 1], feats[i], norm, negative_slope))
        self.up = nn.ModuleList(_conv_block(feats[i + 1] + feats[i], feats[i], norm, negative_slope)
                                for i in reversed(range(self.levels)))
        self.head = nn.Conv3d(feats[0], out_channels, kernel_size=1)
        nn.init.normal_(self.head.weight, std=float(final_init_std))
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, D, H, W)`` -> ``(B, out_channels, D, H, W)``; sizes divisible by ``2**levels``."""
        if x.ndim != 5 or any(n % (2 ** self.levels) for n in x.shape[2:]):
            raise ValueError(f"input must be (B, C, D, H, W) with sizes divisible by {2 ** self.levels}, "
                             f"got {tuple(x.shape)}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        out = self.head(x)
        return out if self.alpha is None else self.alpha * torch.tanh(out)


class DiffeomorphicTemplateTransformer(nn.Module):
    """Prior shape warped by the (diffeomorphic) transformation of Sec. 4, Fig. 2.

    ``p = S(B)`` (Eq. 5), ``V = net([I, p])`` reshaped to ``(B, T, 3, ...)``,
    ``Z = bch_combine([v_1..v_T], order)`` (Eq. 4, ``v_1`` acts first),
    ``ddf = integrate(Z, method)`` (Alg. 1 for ``"ss"``; ``"direct"`` uses ``Z``
    as the displacement: the non-diffeomorphic spatial template transformer),
    output ``clamp(warp(p, ddf), 0, 1)``.

    Args:
        shape: spatial shape ``(D, H, W)``.
        T: number of velocity fields (4 in the paper).
        alpha: ``alpha * tanh`` bound of the fields (256 in the paper).
        bch_order: 1, 2 or 3 (2 in the paper).
        integration: ``"ss"`` or ``"direct"``.
        steps: fixed number of squarings, ``None`` for Alg. 1.
        features: U-Net widths (see :class:`TemplateNet`).
        final_init_std: init std of the last conv (0: output is exactly the prior).
        prior: keyword arguments of :class:`~medssl.geometry.prior.PriorShape`
            (``covariance``, ``mu``, ``sigma2``, ``beta``, ``train_*``);
            ``sigma2`` defaults to PriorShape's reading of Sec. 5.1, "diagonal
            components set at half the volume size": ``(N_k / 2) ** 2``, so the
            ``p = 0.5`` boundary is the ellipsoid inscribed in the volume
            (``(mean_k N_k / 2) ** 2`` for ``covariance="isotropic"``); see
            :mod:`medssl.geometry.prior` for why not ``N_k / 2``.

    Raises:
        ValueError: on a bad shape, ``T``, ``bch_order`` or ``integration``.
    """

    def __init__(self, shape: Sequence[int], T: int = 4, alpha: float = 256.0, bch_order: int = 2,
                 integration: str = "ss", steps: int | None = None,
                 features: Sequence[int] = (16, 32, 64, 128, 256), final_init_std: float = 1e-5,
                 **prior) -> None:
        super().__init__()
        if not isinstance(shape, Sequence) or len(shape) != 3:
            raise ValueError(f"shape must be a sequence of 3 ints (D, H, W), got {shape!r}")
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int, got {T!r}")
        if bch_order not in (1, 2, 3) or isinstance(bch_order, bool):
            raise ValueError(f"bch_order must be 1, 2 or 3, got {bch_order!r}")
        if integration not in METHODS:
            raise ValueError(f"integration must be one of {METHODS}, got {integration!r}")
        self.shape, self.T, self.bch_order = tuple(shape), T, bch_order
        self.integration, self.steps = integration, steps
        # No sigma2 override: PriorShape's default is the paper's initialisation (Sec. 5.1).
        self.prior = PriorShape(shape, **prior)
        self.net = TemplateNet(2, 3 * T, features, alpha=alpha, final_init_std=final_init_std)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment ``image`` ``(B, 1, *shape)``.

        Returns:
            ``{"prob": (B, 1, *shape) in [0, 1], "ddf": (B, 3, *shape),
            "velocity": (B, T, 3, *shape)}``.
        """
        if image.ndim != 5 or image.shape[1] != 1 or tuple(image.shape[2:]) != self.shape:
            raise ValueError(f"image must be (B, 1, {', '.join(map(str, self.shape))}), got {tuple(image.shape)}")
        b = image.shape[0]
        p = self.prior(b).contiguous().to(image.dtype)
        v = self.net(torch.cat([image, p], dim=1)).view(b, self.T, 3, *self.shape)
        z = bch_combine([v[:, t] for t in range(self.T)], order=self.bch_order)
        ddf = integrate(z, method=self.integration, steps=self.steps)
        prob = warp(p, ddf).clamp(0.0, 1.0)
        return {"prob": prob, "ddf": ddf, "velocity": v}


class DirectUNet(nn.Module):
    """"U-Net (direct estimation)" baseline of Table 2: same backbone, 1 channel, sigmoid.

    Args:
        shape: spatial shape ``(D, H, W)`` (checked on input).
        features: U-Net widths (see :class:`TemplateNet`).
    """

    def __init__(self, shape: Sequence[int], features: Sequence[int] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        if not isinstance(shape, Sequence) or len(shape) != 3:
            raise ValueError(f"shape must be a sequence of 3 ints (D, H, W), got {shape!r}")
        self.shape = tuple(shape)
        self.net = TemplateNet(1, 1, features, alpha=None, final_init_std=0.01)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """``image`` ``(B, 1, *shape)`` -> ``{"prob": sigmoid(logits), "ddf": None, "velocity": None}``."""
        if image.ndim != 5 or image.shape[1] != 1 or tuple(image.shape[2:]) != self.shape:
            raise ValueError(f"image must be (B, 1, {', '.join(map(str, self.shape))}), got {tuple(image.shape)}")
        return {"prob": torch.sigmoid(self.net(image)), "ddf": None, "velocity": None}


def build(name: str, shape: Sequence[int], **kw) -> nn.Module:
    """Build a Table 2 row by name.

    ``unet`` -> :class:`DirectUNet` (accepts ``features`` only); ``stt``
    (``integration="direct"``, fixed prior), ``diffeo_fixed`` (``"ss"``, fixed
    prior) and ``diffeo_trained`` (``"ss"``, ``train_mu``, ``train_sigma``,
    ``train_beta`` all True) -> :class:`DiffeomorphicTemplateTransformer`.
    Any keyword overrides the row's defaults, so the Table 3 ablation is e.g.
    ``build("diffeo_trained", shape, train_mu=False, train_beta=False,
    covariance="isotropic")`` ("Train scale sigma^2").

    Raises:
        ValueError: unknown ``name`` (or bad arguments, see the classes).
    """
    if name == "unet":
        extra = set(kw) - {"features"}
        if extra:
            raise ValueError(f"unet accepts only 'features', got {sorted(extra)}")
        return DirectUNet(shape, **kw)
    defaults = {"stt": {"integration": "direct"},
                "diffeo_fixed": {"integration": "ss"},
                "diffeo_trained": {"integration": "ss", "train_mu": True, "train_sigma": True,
                                   "train_beta": True}}
    if name not in defaults:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    return DiffeomorphicTemplateTransformer(shape, **{**defaults[name], **kw})
