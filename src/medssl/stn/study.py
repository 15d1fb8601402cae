"""The ``stn`` study stage: train and evaluate one Table 1 row for one seed.

Data (paper Sec. 5.2, with scikit-learn's bundled 8x8 digits instead of
MNIST, which cannot be downloaded here): the source digits are split into
disjoint train and test pools by :func:`medssl.stn.data.split_sources` (seeded
by the run's seed), up-sampled to ``size`` and rotated uniformly in
``[-max_angle, max_angle]``. The row's classifier is trained with Adam and
cross entropy (plus the gradient penalty for the penalised row) and
evaluated for accuracy and the percentage of non-positive Jacobian
determinants of the applied transformation. Writes
``results/<study>/runs/rotated_digits/<model>/seed<s>/metrics.json``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from medssl import paths, provenance, tracking
from medssl.config import Params
from medssl.io import write_json
from medssl.stn.data import rotated_digits, split_sources
from medssl.stn.models import build
from medssl.stn.train import evaluate, fit
from medssl.train.common import setup

log = logging.getLogger("medssl")


def run_stn(params: Params, study: str, model_name: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate row ``model_name`` of stn study ``study`` with ``seed``.

    Returns:
        the metrics.json record.

    Raises:
        ValueError: if ``study`` is not an stn study or ``model_name`` not one of its models.
    """
    st, spec = params.study_row(study, "stn", model_name, what="model")
    setup(seed, st.num_threads)
    train_src, test_src = split_sources(seed)
    x_train, y_train, _ = rotated_digits(st.n_train, st.size, seed=2 * seed, max_angle=st.max_angle,
                                         sources=train_src)
    x_test, y_test, _ = rotated_digits(st.n_test, st.size, seed=2 * seed + 1, max_angle=st.max_angle,
                                       sources=test_src)
    model = build(spec.kind, size=st.size, **spec.args)
    n_params = sum(p.numel() for p in model.parameters())
    run_params = {"kind": spec.kind, "penalty_weight": spec.penalty_weight,
                  **{f"arg.{k}": v for k, v in spec.args.items()},
                  **st.model_dump(exclude={"models", "title", "seeds", "kind"}), "seed": seed, "n_params": n_params}
    dataset = st.dataset_name
    log.info("stn: study=%s model=%s (%s, %d parameters) seed=%d train=%d test=%d epochs=%d",
             study, model_name, spec.kind, n_params, seed, st.n_train, st.n_test, st.epochs)
    t0 = time.time()
    section = {"study": st.model_dump(mode="json", exclude={"models", "title", "seeds"}),
               "model": spec.model_dump(mode="json")}  # built-in digits: no datalist
    with tracking.tracked_run(study, model_name, dataset, "stn", paths.seed_tag(seed), run_params,
                              tags={"seed": seed, **provenance.run_tags(section)}) as run:
        history = fit(model, x_train, y_train, epochs=st.epochs, lr=st.lr, batch_size=st.batch_size, seed=seed,
                      penalty_weight=spec.penalty_weight, progress=progress, desc=f"stn {model_name} seed {seed}")
        for h in history:
            run.log_metrics({"train_loss": h["loss"], "train_ce": h["ce"]}, step=h["epoch"])
            log.info("stn: epoch %d/%d loss %.4f", h["epoch"], st.epochs, h["loss"])
        res = evaluate(model, x_test, y_test)
        metrics = {"accuracy": res["accuracy"],
                   "neg_jacobian_pct": None if math.isnan(res["neg_jacobian_pct"]) else res["neg_jacobian_pct"]}
        record = {"study": study, "dataset": dataset, "protocol": "stn", "method": model_name, "fraction": 1.0,
                  "seed": seed, "task": "stn", "metrics": metrics, "n_params": n_params, "history": history,
                  "seconds": round(time.time() - t0, 2)}
        out = paths.method_metrics(study, dataset, model_name, seed)
        write_json(out, record)
        run.log_metrics({f"test_{k}": v for k, v in metrics.items() if v is not None})
        run.log_artifact(out)
    log.info("stn: done in %.1f s: accuracy %.4f, %%|J|<=0 %s", record["seconds"], metrics["accuracy"],
             metrics["neg_jacobian_pct"])
    return record
