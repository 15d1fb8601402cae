"""``s2dc``: Structure-aware Semantic Discrepancy and Consistency (ICCV 2025).

Each volume of the batch gives two overlapping sub-volumes (views) ``V_i`` and
``V_i'``. Their patch tokens are matched one-to-one against the ground truth
known from the overlap (supplement D.1) with a differentiable log-domain
Sinkhorn (Alg. 1) or the dual-softmax operator (D.3); each patch loss is
weighted by the Sharpe ratio of its similarity vector (D.4, Eq. 1). A global
InfoNCE term contrasts each sub-volume's embedding with a momentum teacher's
dictionary (D.2, :mod:`medssl.methods.s2dc_dictionary`): the teacher key of a
differently augmented copy of the same sub-volume is the positive; the keys
of every other sub-volume of the batch (the other sub-volume of the same
volume: intra-volume; those of the other volumes: inter-volume) and a FIFO
queue of length K are the negatives.

    loss = w_patch * L_patch + w_global * L_global

medssl's version, and where it differs from the published code on purpose:

* Views are translated crops of the batch patch, offsets multiples of the
  correspondence patch size p, so the ground truth is exact
  (:func:`medssl.ot.correspondence`). The published code matches an affine
  augmentation by mutual nearest neighbours. Each view gets a random
  intensity scale, shift and Gaussian noise, so identical voxels do not make
  the matching trivial.
* Patch tokens: the backbone's ``local`` map average-pooled over p³ cells,
  projected by a small MLP and L2-normalised; both views go through the
  student (the published code matches student tokens against teacher tokens).
* The dustbin score is a registered, trained parameter (the published one
  is never given to the optimiser); the Sinkhorn runs in float32 outside
  autocast.
* Dictionary (D.2): the departures (overlapping sub-volumes, re-augmented
  teacher copies, 2B queries) are listed in :mod:`medssl.methods.s2dc_dictionary`.
* The EMA teacher (backbone + global projector) is updated *inside*
  :meth:`S2DC.loss`, before the teacher embeddings are computed, once per
  training call (``self.training``): the pre-training loop only calls
  ``loss()``, ``backward()`` and ``opt.step()``, so the update sees the
  student after the previous step. Teacher parameters have
  ``requires_grad=False`` (the optimiser skips them); the queue is a buffer,
  so both are in ``state_dict`` and a resumed run continues the same teacher
  and queue.
* Data parallelism (DDP, :mod:`medssl.train.distributed`): every rank draws
  the views of the whole global batch from the method's generator (identical
  on every rank) and trains on its slice. The teacher keys of all ranks are
  all-gathered (no gradient), so each query sees the dictionary of the global
  batch; the patch loss is rescaled to the global ``Σ w ℓ / Σ w``
  (an all-reduce of the weight total); every rank enqueues the same keys of
  the global batch with the same random choice. Students are identical on
  every rank after each DDP step, so the EMA teachers and the queues stay
  identical without any further communication.

Sizes: with the default ``unet3d`` backbone and the default 32³ batch patch,
views are 24³ with p = 8 (offsets 0 or 8 voxels per axis, 27 patches per view,
between 8 and 27 of them shared). MONAI's SwinUNETR needs every view size to
be a multiple of 32 and, with its default instance norm, larger than 32³
(:mod:`medssl.nn.swin`): e.g. views of 64³ from a batch patch of at least
64 + p, or views of 32³ from a 40³ patch (offsets 0 or 8) with a batch or
group norm. The batch patch itself need not be a multiple of 32 (only the
views go through the backbone); the published setting is 96³ views.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medssl.methods.base import PretrainMethod
from medssl.methods.pretext import Pretext, match_accuracy
from medssl.methods.s2dc_dictionary import KeyQueue, dictionary_exclusions, info_nce
from medssl.nn.precision import fp32
from medssl.ot.matching import SinkhornMatcher, correspondence, dual_softmax, matching_loss, patch_nll
from medssl.ot.sharpe import sharpe_weights

OPERATORS = ("sinkhorn", "dual_softmax")


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cout))


def _input_multiple(backbone: nn.Module) -> int:
    """The factor every input size of ``backbone`` must be divisible by (1 when unknown)."""
    if hasattr(backbone, "input_multiple"):
        return int(backbone.input_multiple)
    if hasattr(backbone, "levels"):  # medssl.nn.unet3d.UNet3D
        return 2 ** (int(backbone.levels) - 1)
    return 1


class S2DC(PretrainMethod):
    """S2DC pre-training: Sinkhorn / dual-softmax patch matching + momentum-contrast global term.

    Args:
        backbone: registry backbone (``{"global", "local"}`` features).
        seed: seeds the view offsets, intensity augmentation and queue choice.
        view: size of each sub-volume (int or 3 ints), multiples of ``patch``
            and of the backbone's input multiple (8 for a 4-level U-Net, 32 for
            SwinUNETR); default 24.
        patch: correspondence patch size p (voxels); offsets are multiples of it. Default 8.
        operator: ``"sinkhorn"`` (Alg. 1) or ``"dual_softmax"`` (D.3).
        iterations: Sinkhorn iterations T (100 in the published code; 10 and 100 in Table 3).
        lam: λ, the Sinkhorn entropic regularisation (1 in the paper), also
            the dual-softmax temperature: both use the similarities divided by λ.
        dustbin: SuperGlue dustbin with a trained score; None means on for
            ``"sinkhorn"``, off for ``"dual_softmax"`` (which does not support it).
        bin_init: initial dustbin score (1.0 in the published code).
        sharpe: weight the patch losses by their Sharpe ratios (Eq. 1).
        w_patch, w_global: loss weights (0.5 each in the published code).
        temperature: InfoNCE temperature (0.9 in the published code).
        momentum: EMA momentum m of the teacher, θ_t ← m θ_t + (1 − m) θ_s (0.999).
        queue_size: K, teacher embeddings kept as extra negatives (90 for the
            1k CT corpus and 200 otherwise in the paper); 0 disables the queue.
        embed_dim, hidden_dim: output and hidden width of the two projection heads.
        intensity_scale, intensity_shift, noise: per-view augmentation: the
            view is multiplied by ``1 + U(-scale, scale)``, shifted by
            ``U(-shift, shift)`` and gets Gaussian noise of std ``noise``.
    """

    def __init__(self, backbone: nn.Module, seed: int = 0, view: int | Sequence[int] = 24, patch: int = 8,
                 operator: str = "sinkhorn", iterations: int = 100, lam: float = 1.0, dustbin: bool | None = None,
                 bin_init: float = 1.0, sharpe: bool = True, w_patch: float = 0.5, w_global: float = 0.5,
                 temperature: float = 0.9, momentum: float = 0.999, queue_size: int = 200, embed_dim: int = 128,
                 hidden_dim: int = 256, intensity_scale: float = 0.1, intensity_shift: float = 0.1,
                 noise: float = 0.02, **args: Any) -> None:
        super().__init__(backbone, seed, **args)
        self.view = _check_view(view)
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch (correspondence patch size p) must be a positive integer, got {patch!r}")
        if any(v % patch for v in self.view):
            raise ValueError(f"view {self.view} must be a multiple of patch p={patch}")
        multiple = _input_multiple(backbone)
        if any(v % multiple for v in self.view):
            raise ValueError(f"view {self.view} must be a multiple of {multiple} for the {type(backbone).__name__} "
                             f"backbone (SwinUNETR needs multiples of 32, e.g. views of 64 from a patch >= 64 + p)")
        if hasattr(backbone, "check_input_shape"):
            backbone.check_input_shape(self.view)
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
        dustbin = operator == "sinkhorn" if dustbin is None else bool(dustbin)
        if dustbin and operator == "dual_softmax":
            raise ValueError("the dustbin needs operator 'sinkhorn'; use dustbin=False (or None) with 'dual_softmax'")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if w_patch < 0 or w_global < 0:
            raise ValueError(f"w_patch and w_global must be >= 0, got {w_patch!r} and {w_global!r}")
        for name, v in (("intensity_scale", intensity_scale), ("intensity_shift", intensity_shift), ("noise", noise)):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        self.patch = patch
        self.operator = operator
        self.dustbin = dustbin
        self.lam = float(lam)
        self.sharpe = bool(sharpe)
        self.weights = {"patch": float(w_patch), "global": float(w_global)}
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.augment = (float(intensity_scale), float(intensity_shift), float(noise))

        self.patch_head = _mlp(backbone.local_channels, hidden_dim, embed_dim)
        self.global_head = _mlp(backbone.global_channels, hidden_dim, embed_dim)
        self.matcher = SinkhornMatcher(iterations, lam, dustbin=dustbin, bin_init=bin_init)
        # D.2: the teacher is a momentum copy of encoder + projection head.
        self.teacher = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": copy.deepcopy(self.global_head)})
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.queue_size = queue_size
        self.dictionary = KeyQueue(queue_size, embed_dim)  # D.2: the queue {y_k*}, a buffer of state_dict
        self.generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ views
    def offsets(self, spatial: Sequence[int], generator: torch.Generator | None = None) -> tuple[int, ...]:
        """A random view corner in a patch of size ``spatial``: per axis a multiple of p in [0, P - V]."""
        g = self.generator if generator is None else generator
        out = []
        for size, v in zip(spatial, self.view):
            n = (int(size) - v) // self.patch + 1
            out.append(int(torch.randint(n, (1,), generator=g)) * self.patch)
        return tuple(out)

    def make_views(self, batch: torch.Tensor, generator: torch.Generator | None = None, augment: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Two overlapping views of each volume and their ground-truth correspondence (supplement D.1).

        Args:
            batch: (B, C, P1, P2, P3) with every ``P >= view``.
            generator: randomness of offsets and augmentation (the method's own by default).
            augment: apply the per-view intensity augmentation.

        Returns:
            ``(view_a, view_b, target)``: (B, C, *view) each, and (B, N) long, for
            each patch of A the index of the same-location patch of B or -1.

        Raises:
            ValueError: if the batch is not 5-D or smaller than the view.
        """
        if batch.ndim != 5:
            raise ValueError(f"batch must be (B, C, D, H, W), got shape {tuple(batch.shape)}")
        spatial = tuple(batch.shape[2:])
        if any(s < v for s, v in zip(spatial, self.view)):
            raise ValueError(f"batch patch {spatial} is smaller than the S2DC view {self.view}; "
                             f"raise the pre-training patch or lower 'view'")
        g = self.generator if generator is None else generator
        views_a, views_b, targets = [], [], []
        for x in batch:
            oa, ob = self.offsets(spatial, g), self.offsets(spatial, g)
            views_a.append(_crop(x, oa, self.view))
            views_b.append(_crop(x, ob, self.view))
            targets.append(correspondence(self.view, oa, ob, self.patch))
        a, b = torch.stack(views_a), torch.stack(views_b)
        if augment:
            a, b = self._augment(a, g), self._augment(b, g)
        return a, b, torch.stack(targets).to(batch.device)

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        scale, shift, noise = self.augment
        n = x.shape[0]
        s = 1 + (torch.rand(n, 1, 1, 1, 1, generator=g) * 2 - 1) * scale
        t = (torch.rand(n, 1, 1, 1, 1, generator=g) * 2 - 1) * shift
        out = x * s.to(x) + t.to(x)
        if noise > 0:
            out = out + noise * torch.randn(x.shape, generator=g).to(x)
        return out

    # ----------------------------------------------------------------- tokens
    def tokens(self, local: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, embed_dim), L2-normalised: ``local`` averaged over p³ cells, projected."""
        pooled = F.avg_pool3d(local, self.patch)
        return F.normalize(self.patch_head(pooled.flatten(2).transpose(1, 2)), dim=-1)

    def embed(self, global_map: torch.Tensor, head: nn.Module) -> torch.Tensor:
        """Global embedding (B, embed_dim), L2-normalised: ``global`` averaged over space, projected by ``head``."""
        return F.normalize(head(global_map.mean(dim=(2, 3, 4))), dim=-1)

    def match(self, tokens_a: torch.Tensor, tokens_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities (B, N, M) and log assignment probabilities of the chosen operator.

        Sinkhorn (Alg. 1, with a dustbin: (B, N+1, M+1)) or dual-softmax (D.3),
        both on the similarities divided by λ, in float32 outside autocast.
        """
        with fp32(tokens_a, tokens_b) as (tokens_a, tokens_b):  # einsum would run in bf16 (nn.precision)
            sim = torch.einsum("bnc,bmc->bnm", tokens_a, tokens_b)
            if self.operator == "sinkhorn":
                log_assign = self.matcher(sim)
            else:
                log_assign = dual_softmax(sim, self.lam, log=True)
        return sim, log_assign

    @torch.no_grad()
    def predict_matches(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        """For each patch of A, the index of the patch of B with the largest assignment probability (B, N)."""
        ta = self.tokens(self.backbone(view_a)["local"])
        tb = self.tokens(self.backbone(view_b)["local"])
        _, log_assign = self.match(ta, tb)
        n, m = ta.shape[1], tb.shape[1]
        return log_assign[:, :n, :m].argmax(-1)

    def pretext_scores(self, images: torch.Tensor, labels: torch.Tensor | None, n_classes: int) -> Pretext:
        """:func:`medssl.methods.pretext.match_accuracy` of :meth:`predict_matches`: the matching it trains."""
        return match_accuracy(self.make_views, self.predict_matches, images)

    # ------------------------------------------------------------- dictionary
    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA teacher update of D.2: θ_t ← m θ_t + (1 − m) θ_s (backbone and global head); buffers are copied."""
        m = self.momentum
        for student, teacher in ((self.backbone, self.teacher["backbone"]), (self.global_head, self.teacher["head"])):
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            for bs, bt in zip(student.buffers(), teacher.buffers()):
                bt.copy_(bs)

    def enqueue(self, keys: torch.Tensor) -> None:
        """Push teacher keys (n, embed_dim) into the FIFO queue of length K (D.2)."""
        self.dictionary.enqueue(keys)

    def queue_keys(self) -> torch.Tensor:
        """The queued teacher keys, oldest first ((count, embed_dim))."""
        return self.dictionary.keys()

    def global_loss(self, q: torch.Tensor, k: torch.Tensor, duplicate: torch.Tensor,
                    rows: torch.Tensor | None = None) -> torch.Tensor:
        """InfoNCE of D.2 (:func:`~medssl.methods.s2dc_dictionary.info_nce`) of queries ``q`` against keys ``k``.

        Args:
            q: (R, D) student embeddings of sub-volumes; (2B, D) in the order
                of ``k`` with ``rows=None``.
            k: (2B, D) teacher keys of the re-augmented copies of the (global)
                batch's sub-volumes, views A of all volumes then views B.
            duplicate: (B,) bool, the two sub-volumes of a volume coincide.
            rows: (R,) the index in ``k`` of each query's sub-volume (its
                positive); None means ``arange(2B)``. Under data parallelism
                ``q`` holds this rank's queries and ``k`` every rank's keys.

        The positive of query ``r`` is ``k[rows[r]]``, the negatives every
        other key (the other sub-volume of the same volume unless it is a
        duplicate) and the queue.
        """
        n = k.shape[0] // 2
        rows = torch.arange(2 * n, device=q.device) if rows is None else rows.to(q.device)
        queue = self.queue_keys().detach().clone()  # enqueue() writes in place later
        with fp32(q, k, queue) as (q, k, queue):  # logits over the batch and the queue: fp32 under autocast
            return info_nce(q, k, rows, queue.to(q), self.temperature, dictionary_exclusions(rows, n, duplicate))

    # ------------------------------------------------------------------- loss
    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """S2DC loss of a batch (B, C, P, P, P): ``w_patch * L_patch + w_global * L_global``."""
        if batch.ndim != 5:
            raise ValueError(f"batch must be (B, C, D, H, W), got shape {tuple(batch.shape)}")
        if self.weights["global"] > 0 and batch.shape[0] < 2:
            raise ValueError(f"S2DC's global term contrasts the volumes of a batch: batch size must be >= 2, "
                             f"got {batch.shape[0]}")
        g = self.generator
        with torch.no_grad():
            crop_a, crop_b, target = self.make_views(batch, augment=False)
            a, b = self._augment(crop_a, g), self._augment(crop_b, g)  # student views
            a2, b2 = self._augment(crop_a, g), self._augment(crop_b, g)  # D.2: v' of the teacher keys
            duplicate = (target == torch.arange(target.shape[1], device=target.device)).all(1)  # same offsets
            a, b, a2, b2, target = (self.local(t) for t in (a, b, a2, b2, target))
        n = batch.shape[0]  # the global batch; this rank's slice has ``nl`` volumes
        nl = a.shape[0]
        feats = self.backbone(torch.cat([a, b]))
        tok = self.tokens(feats["local"])
        sim, log_assign = self.match(tok[:nl], tok[nl:])
        weights = sharpe_weights(sim, target >= 0) if self.sharpe else None
        l_patch = matching_loss(log_assign, target, dustbin=self.dustbin, weights=weights)
        if self.world_size > 1:
            l_patch = self._global_patch_mean(l_patch, log_assign, target, weights)

        q = self.embed(feats["global"], self.global_head)
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            k = self.embed(self.teacher["backbone"](torch.cat([a2, b2]))["global"], self.teacher["head"])
        if self.world_size == 1:
            l_global = self.global_loss(q, k, duplicate)
        else:  # every rank's keys, views A of all volumes then views B, as in one process
            k = self.gather(k).view(self.world_size, 2, nl, -1).transpose(0, 1).reshape(2 * n, -1)
            own = self.rank * nl + torch.arange(nl)
            l_global = self.global_loss(q, k, duplicate, rows=torch.cat([own, own + n]))
        if self.training:  # D.2: one randomly chosen sub-volume key of each volume joins the queue
            pick = torch.randint(2, (n,), generator=g) * n + torch.arange(n)
            self.enqueue(k[pick.to(k.device)])

        w = self.weights
        loss = w["patch"] * l_patch + w["global"] * l_global
        with torch.no_grad():
            m = tok.shape[1]  # accuracy of this rank's slice
            pred = log_assign[:, :m, :m].argmax(-1)  # both views have m patches; the dustbin is left out
            valid = target >= 0
            acc = (pred[valid] == target[valid]).float().mean()
        parts = {"patch": float(l_patch.detach()), "global": float(l_global.detach()), "match_acc": float(acc)}
        if self.dustbin:
            parts["bin_score"] = float(self.matcher.bin_score.detach())
        return loss, parts

    def _global_patch_mean(self, l_patch: torch.Tensor, log_assign: torch.Tensor, target: torch.Tensor,
                           weights: torch.Tensor | None) -> torch.Tensor:
        """Rescale this rank's ``Σ w ℓ / Σ w`` so that the DDP gradient average is the global-batch ratio.

        :func:`matching_loss` divides by the total weight of its batch; the
        single-process loss divides by the total over the global batch, so
        each rank's loss becomes ``Σ_rank w ℓ / Σ_all w · world_size`` (the
        weights carry no gradient; DDP averages over ranks).
        """
        import torch.distributed as dist

        with torch.no_grad():
            _, row_mask, _, col_mask = patch_nll(log_assign.detach(), target, self.dustbin)
            w_row = row_mask.to(log_assign.dtype)
            if weights is not None:
                w_row = torch.where(target.to(w_row.device) >= 0, weights.to(w_row), w_row)
            local = w_row.sum() + col_mask.to(log_assign.dtype).sum()
            total = local.clone()
            dist.all_reduce(total)
        if float(total) == 0:
            return l_patch * 0.0
        return l_patch * (local * self.world_size / total)


def _crop(x: torch.Tensor, offset: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    (i, j, k), (d, h, w) = offset, size
    return x[:, i:i + d, j:j + h, k:k + w]


def _check_view(view: int | Sequence[int]) -> tuple[int, int, int]:
    vals = (view,) * 3 if isinstance(view, int) and not isinstance(view, bool) else tuple(view)
    if len(vals) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
        raise ValueError(f"view must be a positive integer or 3 of them, got {view!r}")
    return vals  # type: ignore[return-value]


__all__ = ["OPERATORS", "S2DC"]
