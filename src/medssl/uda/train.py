"""Training of the uda2d methods on tensors (CMEVAE, Qiao et al.; baselines source-only and VAE).

One step (batch ``B`` from each domain, Adam):

* ``source_only``: the segmentation loss of every head on the source batch.
* ``vae``: source and target batches through the VAE together; the negative
  lower bound of supplement Eq. (1) per pixel on both domains — KL
  (both), reconstruction at every scale (both; the reconstructors take the
  *predicted* segmentation, which is all there is on the target, VarDA-style),
  the prediction term (source labels only) — plus the soft Dice of the heads
  on the source.
* ``cmevae``: the same, plus at every scale the CPMC contrast
  (:func:`~medssl.uda.losses.cpmc_loss`) and the margin term
  (:func:`~medssl.uda.losses.margin_loss`) of anchor pixels against the memory
  bank. Source anchors are labelled by the ground truth (pure blocks only);
  target anchors by pseudo-labels — the head's own arg-max where its
  probability is at least ``pseudo_threshold`` — and only after the first
  ``warmup`` fraction of the steps (before that the heads know nothing of the
  target). The bank receives source embeddings only (ground-truth classes),
  after the step's contrast has been computed, by the supplement's rule
  (:class:`~medssl.uda.memory.PrototypeMemory`).

Target labels are never read: ``fit`` has no argument for them.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm import tqdm

from medssl.uda.losses import (cpmc_loss, kl_standard_normal, margin_loss, pixel_labels, pseudo_labels,
                               reconstruction_terms, sample_anchors, segmentation_terms)
from medssl.uda.models import CMEVAENet

__all__ = ["fit", "step_losses"]

TERMS = ("loss", "seg", "dice", "kl", "recon", "contrast", "margin")


class _Cycler:
    """Batches of indices without replacement, reshuffled after each pass (seeded)."""

    def __init__(self, n: int, batch: int, generator: torch.Generator) -> None:
        self.n, self.batch, self.g = n, batch, generator
        self.perm, self.pos = torch.randperm(n, generator=generator), 0

    def next(self) -> torch.Tensor:
        out = []
        while len(out) < self.batch:
            if self.pos == self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.g), 0
            take = min(self.batch - len(out), self.n - self.pos)
            out.extend(self.perm[self.pos:self.pos + take].tolist())
            self.pos += take
        return torch.tensor(out)


def _check_inputs(model, source_x, source_y, target_x) -> None:
    if not isinstance(model, CMEVAENet):
        raise ValueError(f"model must be a CMEVAENet from medssl.uda.build, got {type(model).__name__}")
    if source_x.ndim != 4 or source_y.ndim != 3 or source_x.shape[0] != source_y.shape[0] \
            or source_x.shape[-2:] != source_y.shape[-2:]:
        raise ValueError(f"expected source_x (N, C, H, W) and source_y (N, H, W), got {tuple(source_x.shape)} "
                         f"and {tuple(source_y.shape)}")
    if source_y.dtype != torch.long:
        raise ValueError(f"source_y must be torch.long, got {source_y.dtype}")
    if model.method != "source_only":
        if target_x is None:
            raise ValueError(f"method {model.method!r} needs target_x")
        if target_x.ndim != 4 or target_x.shape[1:] != source_x.shape[1:]:
            raise ValueError(f"target_x must be (M, {', '.join(map(str, source_x.shape[1:]))}), "
                             f"got {tuple(target_x.shape)}")


def step_losses(model: CMEVAENet, xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor | None,
                use_target_anchors: bool = False, generator: torch.Generator | None = None,
                update_memory: bool = True) -> dict[str, torch.Tensor]:
    """All loss terms of one step (weighted total in ``"loss"``); see the module docstring.

    Args:
        model: the network (its ``method`` and ``loss`` settings decide the terms).
        xs, ys: source images ``(B, C, H, W)`` and labels ``(B, H, W)``.
        xt: target images ``(B', C, H, W)`` (ignored by ``source_only``).
        use_target_anchors: add pseudo-labelled target anchors to the CPMC / margin terms.
        generator: seeds the anchor sampling.
        update_memory: push this step's source embeddings into the bank afterwards.

    Returns:
        dict of scalar tensors: ``loss`` (weighted sum), ``seg`` (sum over heads of the cross
        entropy), ``dice``, ``kl`` (per image pixel, mean over both domains), ``recon`` (sum over
        scales, both domains), ``contrast``, ``margin`` (means over scales).
    """
    w = model.loss
    zero = xs.new_zeros(())
    if model.method == "source_only" or xt is None:
        out_s, out_t = model(xs), None
    else:
        out = model(torch.cat([xs, xt]))
        b = xs.shape[0]
        out_s = {k: ([t[:b] for t in v] if isinstance(v, list) else (v[:b] if v is not None else None))
                 for k, v in out.items()}
        out_t = {k: ([t[b:] for t in v] if isinstance(v, list) else (v[b:] if v is not None else None))
                 for k, v in out.items()}
    ce, dice = segmentation_terms(out_s["logits"], ys)
    terms = {"seg": sum(ce), "dice": sum(dice), "kl": zero, "recon": zero, "contrast": zero, "margin": zero}
    both = out if out_t is not None else out_s
    xb = torch.cat([xs, xt]) if out_t is not None else xs
    if w["kl"] and both["logvar"] is not None:
        terms["kl"] = (kl_standard_normal(both["mu"], both["logvar"]) / xb[0].numel()).mean()
    if w["recon"] and both["recon"]:
        terms["recon"] = sum(reconstruction_terms(both["recon"], xb))
    if (w["contrast"] or w["margin"]) and model.memory is not None:
        mem, n_scales = model.memory, model.n_scales
        contrast, margin, pushes = zero, zero, []
        for n in range(n_scales):
            a, lab = sample_anchors(out_s["embed"][n], pixel_labels(ys, model.n_classes, n), int(w["anchors"]),
                                    generator)
            pushes.append((n, a.detach(), lab))
            if use_target_anchors and out_t is not None:
                at, lt = sample_anchors(out_t["embed"][n], pseudo_labels(out_t["logits"][n], w["pseudo_threshold"]),
                                        int(w["anchors"]), generator)
                a, lab = torch.cat([a, at]), torch.cat([lab, lt])
            bank, bank_lab = mem.stored(n)
            contrast = contrast + cpmc_loss(a, lab, bank, bank_lab, w["temperature"])
            protos, valid = mem.prototype(n)
            margin = margin + margin_loss(a, lab, protos, valid, w["margin_m"], w["margin_s"])
        terms["contrast"], terms["margin"] = contrast / n_scales, margin / n_scales
        if update_memory:
            for n, a, lab in pushes:
                for c in range(model.n_classes):
                    feats = a[lab == c][: int(w["bank_per_step"])]
                    if feats.shape[0]:
                        mem.push(n, c, feats)
    terms["loss"] = (w["seg"] * terms["seg"] + w["dice"] * terms["dice"] + w["kl"] * terms["kl"]
                     + w["recon"] * terms["recon"] + w["contrast"] * terms["contrast"] + w["margin"] * terms["margin"])
    return terms


def fit(model: CMEVAENet, source_x: torch.Tensor, source_y: torch.Tensor, target_x: torch.Tensor | None = None,
        epochs: int = 10, steps_per_epoch: int | None = None, batch_size: int = 8, lr: float = 1e-3,
        seed: int = 0, progress: bool = False) -> list[dict]:
    """Train ``model`` (built by :func:`medssl.uda.build`) with Adam; no file I/O.

    Args:
        model: the network; its ``method`` decides the loss (module docstring).
        source_x: ``(N, C, H, W)`` labelled source slices (``H, W`` divisible by 16).
        source_y: ``(N, H, W)`` long labels of the source.
        target_x: ``(M, C, H, W)`` unlabelled target slices (required unless ``source_only``).
        epochs: number of epochs (the supplement: 30 in direction 1, 10 in direction 2 on MS-CMRSeg).
        steps_per_epoch: optimiser steps per epoch (default: one pass over the source, ``ceil(N / batch_size)``).
        batch_size: slices per domain per step.
        lr: Adam learning rate (betas 0.9, 0.999).
        seed: seeds batches, anchors and the reparameterisation noise.
        progress: show a progress bar.

    Returns:
        One dict per epoch: ``epoch``, the mean of each term of :func:`step_losses`
        (``loss``, ``seg``, ``dice``, ``kl``, ``recon``, ``contrast``, ``margin``) and ``seconds``.

    Raises:
        ValueError: bad shapes, a missing target, or non-positive ``epochs`` / ``batch_size`` / ``lr``.
    """
    _check_inputs(model, source_x, source_y, target_x)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if steps_per_epoch is None:
        steps_per_epoch = math.ceil(source_x.shape[0] / batch_size)
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive int, got {steps_per_epoch!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if int(source_y.min()) < 0 or int(source_y.max()) >= model.n_classes:
        raise ValueError(f"source_y values must lie in [0, {model.n_classes - 1}], "
                         f"got [{int(source_y.min())}, {int(source_y.max())}]")
    torch.manual_seed(int(seed))  # reparameterisation noise
    gen = torch.Generator().manual_seed(int(seed))
    src = _Cycler(source_x.shape[0], batch_size, gen)
    tgt = _Cycler(target_x.shape[0], batch_size, gen) if model.method != "source_only" else None
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    warmup_steps = int(model.loss["warmup"] * epochs * steps_per_epoch)
    model.train()
    history, step = [], 0
    for epoch in tqdm(range(epochs), disable=not progress, desc=f"fit {model.method}"):
        t0 = time.perf_counter()
        sums = dict.fromkeys(TERMS, 0.0)
        for _ in range(steps_per_epoch):
            i = src.next()
            xt = target_x[tgt.next()] if tgt is not None else None
            terms = step_losses(model, source_x[i], source_y[i], xt, use_target_anchors=step >= warmup_steps,
                                generator=gen)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            step += 1
            for k in TERMS:
                sums[k] += float(terms[k].detach())
        history.append({"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()},
                        "seconds": time.perf_counter() - t0})
    return history
