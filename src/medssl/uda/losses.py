"""Loss terms of CMEVAE (Qiao et al., supplement Eq. 1 and Sec. III-B).

The lower bound (supplement Eq. 1)::

    log p(x, y) >= -KL(q(z|x,y) || p(z)) + E_q log p(y|x) + E_q log p(y|z) + E_q log p(x|y,z)

is maximised by minimising, per image pixel (the bound divided by ``H W``):

* :func:`kl_standard_normal` — ``KL(q(z|x) || N(0, I))`` in closed form for a
  diagonal Gaussian (under the supplement's assumption that ``y`` and ``z``
  are conditionally independent given ``x``, ``q(z|x,y) = q(z|x)``);
* :func:`segmentation_terms` — ``-E_q log p(y|z)``, the prediction term: the
  cross entropy of every segmentation head against the labels at its scale
  (each head its own loss, supplement Sec. II). A soft Dice per head is added
  (outside the bound, weight ``dice``) as the source segmentation loss;
* :func:`reconstruction_terms` — ``-E_q log p(x|y,z)``: a Gaussian likelihood
  with fixed variance 1/2, i.e. the mean squared error of each scale's
  reconstruction against the image average-pooled to that scale;
* ``E_q log p(y|x)``, the "adaptive task term" that the supplement (Sec. II)
  assigns to the margin-enhanced module: :func:`margin_loss`;
* CPMC's contrast against the memory bank: :func:`cpmc_loss`.

The supplement gives no formula for the last two; the forms here (a
supervised InfoNCE over all stored samples, and an additive cosine margin
against the prototypes) are this implementation's reading, documented at
each function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

__all__ = ["cpmc_loss", "kl_standard_normal", "margin_loss", "pixel_labels", "pseudo_labels",
           "reconstruction_terms", "sample_anchors", "segmentation_terms", "soft_targets"]

IGNORE = -1
_DICE = DiceLoss(include_background=False, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per sample, summed over all latent elements (Eq. 1, first term).

    Closed form: ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``.

    Args:
        mu: ``(B, ...)`` means of ``q(z|x)``.
        logvar: log-variances, same shape.

    Returns:
        ``(B,)`` KL divergences (nats), 0 exactly when ``mu = 0`` and ``logvar = 0``.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def soft_targets(y: torch.Tensor, n_classes: int, scale: int) -> torch.Tensor:
    """Class proportions of each ``2^scale x 2^scale`` block: the label map at decoder scale ``scale``.

    Args:
        y: ``(B, H, W)`` integer labels in ``[0, n_classes)``.
        n_classes: number of classes.
        scale: decoder scale ``n`` (0 = full resolution).

    Returns:
        ``(B, n_classes, H / 2^n, W / 2^n)`` float, summing to 1 over classes.
    """
    if y.ndim != 3:
        raise ValueError(f"y must be (B, H, W), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes - 1}], got [{int(y.min())}, {int(y.max())}]")
    t = F.one_hot(y.long(), n_classes).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(t, 2 ** scale) if scale else t


def segmentation_terms(logits: list[torch.Tensor], y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per head: cross entropy (``-log p(y|z)`` per pixel, Eq. 1 prediction term) and soft Dice loss.

    The targets at scale ``n`` are the class proportions of the full-resolution labels in each
    ``2^n`` block (:func:`soft_targets`), so a coarse head is scored against exactly what its
    pixel covers.

    Returns:
        ``(ce, dice)``: lists with one scalar per head, finest first.
    """
    ces, dices = [], []
    for n, lg in enumerate(logits):
        t = soft_targets(y, lg.shape[1], n)
        if t.shape[-2:] != lg.shape[-2:]:
            raise ValueError(f"head {n} gives {tuple(lg.shape[-2:])} but labels pool to {tuple(t.shape[-2:])}")
        ces.append(-(t * F.log_softmax(lg, 1)).sum(1).mean())
        dices.append(_DICE(lg, t))
    return ces, dices


def reconstruction_terms(recon: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """Per scale: ``-log p(x|y,z)`` per pixel up to a constant (Eq. 1 reconstruction term).

    A Gaussian with variance 1/2 around the reconstruction, i.e. the mean squared error
    against the image average-pooled by ``2^n``.
    """
    return [F.mse_loss(r, F.avg_pool2d(x, 2 ** n) if n else x) for n, r in enumerate(recon)]


def pixel_labels(y: torch.Tensor, n_classes: int, scale: int, purity: float = 0.999) -> torch.Tensor:
    """Source anchor labels at ``scale``: the class of each pure block, ``IGNORE`` (-1) on mixed blocks."""
    t = soft_targets(y, n_classes, scale)
    conf, lab = t.max(1)
    return torch.where(conf >= purity, lab, torch.full_like(lab, IGNORE))


def pseudo_labels(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Target pseudo-labels: arg-max of the head's softmax where its probability is ``>= threshold``, else -1."""
    conf, lab = torch.softmax(logits.detach(), 1).max(1)
    return torch.where(conf >= threshold, lab, torch.full_like(lab, IGNORE))


def sample_anchors(embed: torch.Tensor, labels: torch.Tensor, per_class: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``per_class`` random pixels of each class (ignoring -1): ``(N, D)`` embeddings, ``(N,)`` labels."""
    if embed.ndim != 4 or labels.shape != (embed.shape[0], *embed.shape[2:]):
        raise ValueError(f"embed (B, D, h, w) and labels (B, h, w) disagree: "
                         f"{tuple(embed.shape)}, {tuple(labels.shape)}")
    flat = embed.permute(0, 2, 3, 1).reshape(-1, embed.shape[1])
    lab = labels.reshape(-1)
    picks = []
    for c in torch.unique(lab[lab >= 0]).tolist():
        idx = torch.nonzero(lab == c).squeeze(1)
        if idx.numel() > per_class:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:per_class].to(idx.device)]
        picks.append(idx)
    if not picks:
        return flat[:0], lab[:0]
    idx = torch.cat(picks)
    return flat[idx], lab[idx]


def cpmc_loss(anchors: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
              temperature: float = 0.1) -> torch.Tensor:
    """Contrast of anchor pixels against every stored sample of the memory bank (CPMC, supplement Sec. III-B).

    A supervised InfoNCE ("used all the stored samples in each contrast round"): for an
    anchor ``a`` of class ``c`` with positives ``P`` (stored samples of class ``c``) among all
    stored samples ``M``::

        l(a) = -1/|P| sum_{p in P} log( exp(a.p / t) / sum_{k in M} exp(a.k / t) )

    averaged over the anchors whose class has stored samples (0 when none has).

    Args:
        anchors: ``(N, D)`` unit embeddings (with gradient).
        labels: ``(N,)`` their classes.
        bank: ``(M, D)`` stored unit embeddings (no gradient).
        bank_labels: ``(M,)`` their classes.
        temperature: softmax temperature ``t > 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if anchors.shape[0] == 0 or bank.shape[0] == 0:
        return anchors.sum() * 0.0
    logits = anchors @ bank.detach().T / temperature
    pos = (labels[:, None] == bank_labels[None, :]).float()
    keep = pos.sum(1) > 0
    if not keep.any():
        return anchors.sum() * 0.0
    log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
    per_anchor = -(log_prob * pos).sum(1) / pos.sum(1).clamp_min(1.0)
    return per_anchor[keep].mean()


def margin_loss(anchors: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor,
                margin: float = 0.2, scale: float = 10.0) -> torch.Tensor:
    """Margin enhancement: an additive cosine margin between an anchor's own prototype and the others.

    This implementation's model of the margin-enhanced term ``E_q log p(y|x)`` (supplement
    Sec. II; the supplement gives no formula). With ``cos_k`` the cosine of the anchor to the
    prototype of class ``k`` (only classes with a prototype, ``valid``) and ``c`` its class::

        l(a) = -log( exp(s (cos_c - m)) / (exp(s (cos_c - m)) + sum_{k != c} exp(s cos_k)) )

    so the loss only reaches its floor when ``cos_c`` exceeds every other ``cos_k`` by the
    margin ``m``. Averaged over anchors whose class is valid; 0 if fewer than two classes are.
    """
    if margin < 0 or scale <= 0:
        raise ValueError(f"margin must be >= 0 and scale > 0, got {margin!r}, {scale!r}")
    keep = valid[labels] if labels.numel() else labels.bool()
    if int(valid.sum()) < 2 or not keep.any():
        return anchors.sum() * 0.0
    a, lab = anchors[keep], labels[keep]
    cos = a @ F.normalize(prototypes.detach(), dim=1).T
    logits = scale * (cos - margin * F.one_hot(lab, prototypes.shape[0]).to(cos))
    logits = logits.masked_fill(~valid[None, :], float("-inf"))
    return F.cross_entropy(logits, lab)
