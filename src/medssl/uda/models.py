"""CMEVAE network (Qiao et al., supplement Sec. II) and its baselines.

One network class, :class:`CMEVAENet`, serves the three methods of the study:

* the **encoder** is a five-level 2D U-Net encoder (supplement Fig. 2: two
  3x3 convolutions per level, 2x2 max-pooling between levels). At the
  bottleneck two 1x1 convolutions give the mean and log-variance of the
  diagonal Gaussian ``q(z|x)`` (a spatial latent map), and ``z`` is drawn by
  the reparameterisation ``z = mu + exp(logvar / 2) * eps`` (Kingma & Welling,
  supplement ref. [1]); in eval mode ``z = mu``;
* the **up-sampling path** (transposed convolution, concatenation of the
  encoder's skip features, two 3x3 convolutions per level) decodes ``z``;
* **multi-scale segmentation heads**: a 1x1 convolution to ``B x Nc x H/2^n x
  W/2^n`` at each of the ``n_scales`` finest decoder scales (supplement
  Sec. II: "a convolutional layer that changes the dimensionality of the
  feature into R^{B x Nc x W/2^n x H/2^n}"). Each is trained with its own
  loss; the final segmentation up-samples every scale's softmax to full
  resolution and averages them with ``scale_weights``;
* **per-scale reconstructors**: each reconstructs the image at its scale from
  the up-sampling features of that scale concatenated with the predicted
  segmentation (softmax) of that scale's head (supplement Sec. II, "separate
  decoders for the reconstruction of the different resolution images"):
  the model of ``p(x|y, z)`` in Eq. (1);
* **projection heads** (two 1x1 convolutions to ``embed_dim``, L2-normalised)
  give the pixel embeddings at the same scales for the contrastive prototype
  memory bank and the margin term (CPMC, supplement Sec. III-B); the bank
  (:class:`medssl.uda.memory.PrototypeMemory`) lives in the network as buffers.

Baselines (:func:`build`): ``source_only`` is the same U-Net with a
deterministic bottleneck, no reconstructors and no projection heads;
``vae`` is the full VAE without the contrastive and margin terms (a
UDA-VAE-like model); ``cmevae`` adds them. Convolution blocks are MONAI's
(:class:`monai.networks.nets.basic_unet.TwoConv`, ``Down``, ``UpCat``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

from medssl.uda.memory import PrototypeMemory

__all__ = ["METHODS", "CMEVAENet", "build"]

METHODS = ("source_only", "vae", "cmevae")


def _loss_defaults(method: str) -> dict:
    """Loss weights of ``method``: the VAE baseline is CMEVAE with the contrastive and margin weights 0.

    The supplement (Sec. III-B) follows VarDA (its ref. [9]) for the basic terms and
    "scale[s] down" the new losses "to an order of magnitude corresponding to the basic
    loss": the contrastive and margin terms get 0.1 here.
    """
    base = {"seg": 1.0, "dice": 1.0, "kl": 1.0, "recon": 1.0, "contrast": 0.1, "margin": 0.1,
            "temperature": 0.1, "margin_m": 0.2, "margin_s": 10.0, "pseudo_threshold": 0.9,
            "warmup": 0.3, "anchors": 64, "bank_per_step": 4}
    if method == "source_only":
        base.update(kl=0.0, recon=0.0, contrast=0.0, margin=0.0)
    elif method == "vae":
        base.update(contrast=0.0, margin=0.0)
    return base


class CMEVAENet(nn.Module):
    """Five-level 2D U-Net VAE with multi-scale heads, reconstructors and a prototype memory bank.

    Args:
        n_classes: segmentation classes (background included), ``>= 2``.
        in_channels: image channels.
        features: channel widths of the five encoder levels (the U-Net's 64-128-256-512-1024
            scaled down for CPU; default 8-16-32-64-128).
        latent_channels: channels of the latent map ``z`` (default ``features[-1]``).
        n_scales: number of segmentation heads / reconstructors / projection heads, at the
            ``n_scales`` finest decoder scales (1 to 4; CPMC uses three).
        variational: sample ``z`` from ``q(z|x)`` (False: a deterministic bottleneck ``z = mu``).
        reconstruct: build the per-scale reconstructors.
        embed_dim: pixel-embedding size of the projection heads (0: no projection heads, no bank).
        memory_size: samples per class and scale in the memory bank (supplement: 50).
        scale_weights: weights of the scales in the combined segmentation (default ``2^-n``, normalised).
        norm: MONAI norm of the conv blocks (default instance norm with affine parameters).
        act: MONAI activation.
        method: the method name this network was built for (kept for :func:`medssl.uda.train.fit`).
        loss: loss weights and CPMC settings (see :func:`build`).
    """

    def __init__(self, n_classes: int, in_channels: int = 1, features: Sequence[int] = (8, 16, 32, 64, 128),
                 latent_channels: int | None = None, n_scales: int = 3, variational: bool = True,
                 reconstruct: bool = True, embed_dim: int = 32, memory_size: int = 50,
                 scale_weights: Sequence[float] | None = None,
                 norm: str | tuple = ("instance", {"affine": True}),
                 act: str | tuple = ("leakyrelu", {"negative_slope": 0.1}),
                 method: str = "cmevae", loss: dict | None = None) -> None:
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        features = tuple(int(f) for f in features)
        if len(features) != 5 or min(features) < 1:
            raise ValueError(f"features must be five positive widths (five-level U-Net), got {features!r}")
        if isinstance(n_scales, bool) or not isinstance(n_scales, int) or not 1 <= n_scales <= 4:
            raise ValueError(f"n_scales must be an int in 1..4, got {n_scales!r}")
        if embed_dim < 0 or memory_size < 1:
            raise ValueError(f"embed_dim must be >= 0 and memory_size >= 1, got {embed_dim!r}, {memory_size!r}")
        norm = tuple(norm) if isinstance(norm, list) else norm  # YAML gives lists; MONAI wants (name, args)
        act = tuple(act) if isinstance(act, list) else act
        lat = int(latent_channels or features[-1])
        if scale_weights is None:
            scale_weights = [2.0 ** -n for n in range(n_scales)]
        if len(scale_weights) != n_scales or min(scale_weights) < 0 or sum(scale_weights) <= 0:
            raise ValueError(f"scale_weights must be {n_scales} non-negative weights with a positive sum, "
                             f"got {scale_weights!r}")
        self.n_classes, self.n_scales, self.features = n_classes, n_scales, features
        self.variational, self.embed_dim, self.method = bool(variational), int(embed_dim), method
        self.loss = dict(loss or _loss_defaults(method))
        self.config = {"n_classes": n_classes, "in_channels": in_channels, "features": list(features),
                       "latent_channels": lat, "n_scales": n_scales, "variational": bool(variational),
                       "reconstruct": bool(reconstruct), "embed_dim": int(embed_dim), "memory_size": memory_size,
                       "scale_weights": [float(w) for w in scale_weights], "norm": norm, "act": act,
                       "method": method, "loss": self.loss}
        w = torch.tensor([float(v) for v in scale_weights])
        self.register_buffer("scale_weights", w / w.sum())
        common = {"spatial_dims": 2, "act": act, "norm": norm, "bias": norm is None}  # a norm cancels a bias
        self.enc = nn.ModuleList([TwoConv(in_chns=in_channels, out_chns=features[0], **common)]
                                 + [Down(in_chns=features[i - 1], out_chns=features[i], **common) for i in range(1, 5)])
        self.mu = Convolution(2, features[4], lat, kernel_size=1, conv_only=True)
        self.logvar = Convolution(2, features[4], lat, kernel_size=1, conv_only=True) if variational else None
        ups, prev = [], lat
        for level in (3, 2, 1, 0):
            ups.append(UpCat(in_chns=prev, cat_chns=features[level], out_chns=features[level], halves=False, **common))
            prev = features[level]
        self.ups = nn.ModuleList(ups)  # produce decoder scales 3, 2, 1, 0 (H/8 ... H)
        self.seg_heads = nn.ModuleList([Convolution(2, features[n], n_classes, kernel_size=1, conv_only=True)
                                        for n in range(n_scales)])
        self.recons = nn.ModuleList([
            nn.Sequential(TwoConv(in_chns=features[n] + n_classes, out_chns=features[n], **common),
                          Convolution(2, features[n], in_channels, kernel_size=1, conv_only=True))
            for n in range(n_scales)]) if reconstruct else None
        self.projs = nn.ModuleList([
            nn.Sequential(Convolution(2, features[n], features[n], kernel_size=1, act=act, norm=None),
                          Convolution(2, features[n], embed_dim, kernel_size=1, conv_only=True))
            for n in range(n_scales)]) if embed_dim else None
        self.memory = PrototypeMemory(n_classes, embed_dim, n_scales, memory_size) if embed_dim else None

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """Encoder features of the five levels, and ``mu``, ``logvar`` of ``q(z|x)`` (None if deterministic)."""
        if x.ndim != 4 or x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"x must be (B, C, H, W) with H, W divisible by 16 (five levels), got {tuple(x.shape)}")
        skips = []
        h = x
        for block in self.enc:
            h = block(h)
            skips.append(h)
        return skips, self.mu(h), (self.logvar(h) if self.logvar is not None else None)

    def forward(self, x: torch.Tensor, sample: bool | None = None) -> dict:
        """Run the whole network.

        Args:
            x: ``(B, C, H, W)`` images, ``H, W`` divisible by 16.
            sample: draw ``z`` by reparameterisation (default: in training mode, if variational).

        Returns:
            dict with ``mu``, ``logvar`` (None if deterministic), ``z``; per scale n = 0 (full
            resolution) .. n_scales - 1, lists ``logits`` (B, Nc, H/2^n, W/2^n), ``recon``
            (B, C, H/2^n, W/2^n; empty without reconstructors), ``embed`` (B, D, H/2^n, W/2^n,
            unit norm; empty without projection heads); and ``prob``, the combined full-resolution
            segmentation probabilities (B, Nc, H, W).
        """
        skips, mu, logvar = self.encode(x)
        if sample is None:
            sample = self.training and self.variational
        z = mu
        if sample and logvar is not None:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        dec = {}
        h = z
        for level, up in zip((3, 2, 1, 0), self.ups, strict=True):
            h = up(h, skips[level])
            dec[level] = h
        logits = [self.seg_heads[n](dec[n]) for n in range(self.n_scales)]
        probs = [torch.softmax(lg, 1) for lg in logits]
        recon = ([self.recons[n](torch.cat([dec[n], probs[n]], 1)) for n in range(self.n_scales)]
                 if self.recons is not None else [])
        embed = ([F.normalize(self.projs[n](dec[n]), dim=1) for n in range(self.n_scales)]
                 if self.projs is not None else [])
        size = x.shape[-2:]
        prob = sum(w * (p if n == 0 else F.interpolate(p, size=size, mode="bilinear", align_corners=False))
                   for n, (w, p) in enumerate(zip(self.scale_weights, probs, strict=True)))
        return {"mu": mu, "logvar": logvar, "z": z, "logits": logits, "recon": recon, "embed": embed, "prob": prob}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Arg-max label map ``(B, H, W)`` of the combined multi-scale segmentation (eval mode, ``z = mu``)."""
        was = self.training
        self.eval()
        out = torch.cat([self(x[i:i + batch_size], sample=False)["prob"].argmax(1)
                         for i in range(0, x.shape[0], batch_size)])
        self.train(was)
        return out


def build(method: str, n_classes: int, seed: int = 0, **args) -> CMEVAENet:
    """Build the network of ``method`` (``source_only``, ``vae`` or ``cmevae``).

    Args:
        method: ``source_only`` (deterministic U-Net, segmentation heads only, trained on the
            source alone), ``vae`` (CMEVAE without the contrastive and margin terms, UDA-VAE-like)
            or ``cmevae``.
        n_classes: segmentation classes including the background.
        seed: seeds the weight initialisation (the global RNG is left as it was).
        **args: :class:`CMEVAENet` arguments (``features``, ``n_scales``, ``embed_dim``, ...), and
            ``loss``: a dict overriding loss weights / settings, keys
            ``seg`` (cross-entropy of each head, the prediction term of Eq. 1), ``dice`` (soft Dice
            of each head, added to the bound), ``kl`` (KL term of Eq. 1), ``recon`` (reconstruction
            term of Eq. 1), ``contrast`` (CPMC), ``margin`` (margin enhancement), ``temperature``
            (CPMC softmax temperature), ``margin_m`` / ``margin_s`` (additive cosine margin and
            scale), ``pseudo_threshold`` (confidence of target pseudo-labels), ``warmup`` (fraction
            of the training steps before target pseudo-labels enter), ``anchors`` (anchor pixels
            per class, scale and domain per step), ``bank_per_step`` (source samples pushed into
            the bank per class and scale per step).

    Raises:
        ValueError: unknown ``method`` or ``loss`` key, or bad network arguments.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    loss = _loss_defaults(method)
    extra = dict(args.pop("loss", None) or {})
    unknown = sorted(set(extra) - set(loss))
    if unknown:
        raise ValueError(f"unknown loss settings {unknown}; known: {sorted(loss)}")
    loss.update(extra)
    if method == "source_only":
        args.setdefault("variational", False)
        args.setdefault("reconstruct", False)
        args.setdefault("embed_dim", 0)
    elif method == "vae":
        args.setdefault("embed_dim", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return CMEVAENet(n_classes, method=method, loss=loss, **args)
