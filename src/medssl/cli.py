"""``medssl <stage>``: the one entry point every Snakemake rule and DVC stage calls.

Each subcommand reads only its own part of ``params.yaml`` (``--params`` to use
another file) and writes only the outputs named in ``medssl.paths``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from medssl import __version__

log = logging.getLogger("medssl")


def _params(args: argparse.Namespace):
    from medssl import config

    return config.load(args.params)


def cmd_check(args: argparse.Namespace) -> int:
    from medssl.data.leakage import find_leaks

    p = _params(args)
    leaks, unchecked = find_leaks(p)
    for leak in leaks:
        print(f"{args.params}: test-set leakage: {leak}", file=sys.stderr)
    if leaks:
        return 1
    print(f"{args.params}: valid ({len(p.datasets)} datasets, {len(p.methods)} methods, "
          f"{len(p.studies)} studies: {', '.join(p.studies)})")
    if unchecked:
        print(f"leakage: not preprocessed yet, checked when pre-training starts: {', '.join(unchecked)}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from medssl import config
    from medssl.io import write_text

    text = json.dumps(config.json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from medssl.data.catalog import resolve
    from medssl.data.fetch import fetch

    p = _params(args)
    for name in _datasets(p, args.datasets):
        out = fetch(name, resolve(p, name), force=args.force, progress=args.progress)
        print(f"{name}: {out}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from medssl.data.catalog import resolve
    from medssl.data.preprocess import preprocess_dataset

    p = _params(args)
    for name in _datasets(p, args.datasets):
        out = preprocess_dataset(name, resolve(p, name), progress=args.progress)
        print(f"{name}: {out}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    import json

    from tabulate import tabulate

    from medssl.data.status import dataset_rows

    rows = dataset_rows(_params(args), include_catalog=not args.params_only)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    mark = {True: "yes", False: "-", None: ""}
    cols = ["dataset", "defined in", "task", "modality", "layout", "used by", "present", "fetched",
            "preprocessed", "cases"] + (["source"] if args.sources else [])
    table = [[mark.get(r[c], r[c]) if isinstance(r[c], bool) or r[c] is None else r[c] for c in cols]
             for r in rows]
    print(tabulate(table, headers=cols, tablefmt="simple"))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from medssl.train.distributed import BACKEND_ENV, env_world
    from medssl.train.pretrain import pretrain

    p = _params(args)
    _known(args.study, p.studies, "study")
    if p.studies[args.study].kind != "ssl":
        raise SystemExit(f"error: study {args.study!r} is of kind {p.studies[args.study].kind!r}; "
                         "only ssl studies pre-train")
    if args.method not in p.studies[args.study].methods:
        raise SystemExit(f"error: method {args.method!r} is not in study {args.study!r}")
    if args.dist_backend:
        os.environ[BACKEND_ENV] = args.dist_backend
    if env_world()[0] > 0:  # torchrun rank > 0: warnings and errors only, rank 0 tells the story
        log.setLevel(logging.WARNING)
    pretrain(p, args.study, args.method, progress=args.progress, device=args.device)
    return 0


def cmd_downstream(args: argparse.Namespace) -> int:
    from medssl.train.downstream import downstream_seeds

    p = _params(args)
    _known(args.study, p.studies, "study")
    _known(args.dataset, p.datasets, "dataset")
    downstream_seeds(p, args.study, args.dataset, args.protocol, args.method, args.fraction, args.seed or [0],
                     progress=args.progress, device=args.device)
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    from medssl.template.study import run_template
    from medssl.train.common import run_seeds

    p = _params(args)
    _known(args.study, p.studies, "study")
    p.study_row(args.study, "template", args.model, what="model")  # a wrong name fails once, not once per seed
    run_seeds(lambda seed: run_template(p, args.study, args.model, seed, progress=args.progress),
              args.seed or [0], f"template {args.study} {args.model}")
    return 0


def cmd_stn(args: argparse.Namespace) -> int:
    from medssl.stn.study import run_stn
    from medssl.train.common import run_seeds

    p = _params(args)
    _known(args.study, p.studies, "study")
    p.study_row(args.study, "stn", args.model, what="model")  # a wrong name fails once, not once per seed
    run_seeds(lambda seed: run_stn(p, args.study, args.model, seed, progress=args.progress),
              args.seed or [0], f"stn {args.study} {args.model}")
    return 0


def cmd_uda(args: argparse.Namespace) -> int:
    from medssl.uda.study import run_uda
    from medssl.train.common import run_seeds

    p = _params(args)
    _known(args.study, p.studies, "study")
    st, _ = p.study_row(args.study, "uda", args.method, what="method")  # wrong names fail once, not per seed
    st.direction(args.direction)
    run_seeds(lambda seed: run_uda(p, args.study, args.method, args.direction, seed, progress=args.progress),
              args.seed or [0], f"uda {args.study} {args.method} {args.direction}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from medssl.report.tables import write_study_tables

    p = _params(args)
    _known(args.study, p.studies, "study")
    written = write_study_tables(p, args.study)
    return _report_written(written, args.show)


def cmd_pretext_table(args: argparse.Namespace) -> int:
    from medssl.report.pretext import study_pretext_files, write_pretext_table

    written = write_pretext_table(study_pretext_files(_params(args)))
    return _report_written(written, args.show)


def cmd_claims(args: argparse.Namespace) -> int:
    from medssl.report.claims import write_claims

    written = write_claims(_params(args))
    return _report_written(written, args.show)


def _report_written(written: dict, show: bool) -> int:
    """Print the paths a report command wrote, and the Markdown one with ``--show``."""
    for ext, path in written.items():
        print(f"{ext}: {path}")
    if show:
        print(Path(written["md"]).read_text())
    return 0


def cmd_init_tracking(args: argparse.Namespace) -> int:
    from medssl import tracking

    uri = tracking.init_store()
    print(f"MLflow store ready: {uri}")
    return 0


def _datasets(p, names: Sequence[str]) -> list[str]:
    """Dataset names to work on: none = the studies' datasets, ``all`` = params.yaml's,
    otherwise names from params.yaml or the catalog of real datasets."""
    from medssl.data.catalog import catalog

    if not names:  # the datasets the studies use (what data.dvc tracks)
        return sorted({d for study in p.studies for d in p.study_datasets(study)})
    if list(names) == ["all"]:
        return sorted(p.datasets)
    known = {**catalog(), **p.datasets}
    for n in names:
        _known(n, known, "dataset")
    return list(names)


def _known(name: str, table: dict, what: str) -> None:
    if name not in table:
        raise SystemExit(f"error: unknown {what} {name!r}; known: {', '.join(sorted(table))}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medssl", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"medssl {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=os.environ.get("MEDSSL_PARAMS", "params.yaml"),
                        help="configuration file (default: params.yaml or $MEDSSL_PARAMS)")
    common.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide progress bars (they show only on a terminal anyway)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True, metavar="<stage>")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    add("check", cmd_check, "validate params.yaml (unknown keys, methods, datasets are errors) and check that "
        "no study pre-trains on a downstream validation / test case (by raw-file hash, case id and subject, "
        "over the datasets already preprocessed); exit 1 on a leak")
    sp = add("schema", cmd_schema, "print (or write) the JSON schema of params.yaml")
    sp.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    sp = add("fetch", cmd_fetch, "download / generate / check raw data into data/raw/<dataset>")
    sp.add_argument("datasets", nargs="*",
                    help="dataset names from params.yaml, 'all', or none for the datasets of the studies")
    sp.add_argument("--force", action="store_true", help="fetch again even when present")
    sp = add("preprocess", cmd_preprocess, "reorient, resample, normalise, crop into data/processed/<dataset>")
    sp.add_argument("datasets", nargs="*",
                    help="dataset names from params.yaml, 'all', or none for the datasets of the studies")
    sp = add("datasets", cmd_datasets, "list every dataset (params.yaml and the catalog of real datasets): "
             "source, layout, studies using it, and whether it is present, fetched and preprocessed")
    sp.add_argument("--params-only", action="store_true", help="only the datasets of params.yaml")
    sp.add_argument("--sources", action="store_true", help="add the source column (URL / registration page)")
    sp.add_argument("--json", action="store_true", help="print the rows as JSON")
    sp = add("pretrain", cmd_pretrain, "pre-train one method of a study; writes checkpoints/<study>/<method>/. "
             "Resumes from checkpoints/<study>/<method>/state.pt when its configuration matches; on SIGTERM or "
             "SIGUSR1 saves that state and exits with status 75 (rerun to resume). Under `torchrun "
             "--nproc_per_node N` trains data-parallel (DDP), batch_size being the global batch.")
    sp.add_argument("study")
    sp.add_argument("method")
    sp.add_argument("--device", default=None,
                    help="cpu, cuda, cuda:1 ... (default: $MEDSSL_DEVICE, else cuda when available, else cpu; "
                         "under torchrun each rank takes cuda:<LOCAL_RANK>)")
    sp.add_argument("--dist-backend", default=None,
                    help="torch.distributed backend under torchrun (default: $MEDSSL_DIST_BACKEND, else nccl on "
                         "CUDA and gloo on the CPU)")
    sp = add("downstream", cmd_downstream, "train + evaluate one downstream run; writes its metrics.json. "
             "Resumes from state.pt beside it when its configuration matches; on SIGTERM or SIGUSR1 saves that "
             "state and exits with status 75 (rerun to resume).")
    sp.add_argument("study")
    sp.add_argument("dataset")
    sp.add_argument("protocol", choices=["linear", "finetune"])
    sp.add_argument("method")
    sp.add_argument("--fraction", type=float, default=1.0, help="label fraction of the training split")
    sp.add_argument("--seed", type=int, action="append",
                    help="run seed (default 0); repeat it to run several seeds of the row in this one process")
    sp.add_argument("--device", default=None,
                    help="cpu, cuda, cuda:1 ... (default: $MEDSSL_DEVICE, else cuda when available, else cpu)")
    sp = add("template", cmd_template, "train + evaluate one model of a template study (Tables 2/3 of the "
             "diffeomorphic template transformers); writes its metrics.json")
    sp.add_argument("study")
    sp.add_argument("model", help="a key of the study's models")
    sp.add_argument("--seed", type=int, action="append",
                    help="run seed (default 0); repeat it to run several seeds in this one process")
    sp = add("stn", cmd_stn, "train + evaluate one classifier of an stn study (Table 1, rotated digits); "
             "writes its metrics.json")
    sp.add_argument("study")
    sp.add_argument("model", help="a key of the study's models")
    sp.add_argument("--seed", type=int, action="append",
                    help="run seed (default 0); repeat it to run several seeds in this one process")
    sp = add("uda", cmd_uda, "train one method of a uda study on a labelled source and an unlabelled target "
             "modality, evaluate on the target; writes its metrics.json")
    sp.add_argument("study")
    sp.add_argument("method", help="a key of the study's models")
    sp.add_argument("direction", help="a direction of the study (its name, or <source>_to_<target>)")
    sp.add_argument("--seed", type=int, action="append",
                    help="run seed (default 0); repeat it to run several seeds in this one process")
    sp = add("table", cmd_table, "write results/<study>/table.{md,tex,csv} from the metrics.json files")
    sp.add_argument("study")
    sp.add_argument("--show", action="store_true", help="print the Markdown table")
    sp = add("pretext-table", cmd_pretext_table, "write results/pretext.{md,csv}: each pre-training method's "
             "own task (restoration PSNR, warped-label Dice, patch matching) on held-out volumes at step 0 and "
             "at the end, from checkpoints/<study>/<method>/pretext.json")
    sp.add_argument("--show", action="store_true", help="print the Markdown table")
    sp = add("claims", cmd_claims, "write results/claims.{md,csv}: each claim of the four papers (a row beats "
             "another on a metric) tested on this run's results, paired t-test across seeds, with a verdict")
    sp.add_argument("--show", action="store_true", help="print the Markdown table")
    add("init-tracking", cmd_init_tracking, "create the MLflow store once before jobs fan out")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Progress bars on a terminal; in a job's log file, the per-epoch log lines instead.
    args.progress = args.progress and sys.stderr.isatty()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    argv_text = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    log.info("medssl %s: %s (python %s, host %s, pid %d)", __version__, argv_text, platform.python_version(),
             platform.node(), os.getpid())
    t0 = time.time()
    from medssl.config import ConfigError

    try:
        rc = args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        log.error("%s failed: %s", args.command, exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        status = getattr(exc, "exit_status", None)  # a training job stopped by a signal after saving its state
        if status is None:
            raise
        log.warning("%s: %s; rerun the same command to resume (exit status %d)", args.command, exc, status)
        return status
    log.info("medssl %s finished in %.1f s", args.command, time.time() - t0)
    return rc


# Stages whose process holds torch, MONAI and MLflow: tearing the interpreter down takes ~1.4 s
# (issue 15) after everything is written, so they end with os._exit once logs and streams are flushed.
FAST_EXIT = frozenset({"pretrain", "downstream", "template", "stn", "uda"})


def run(argv: Sequence[str] | None = None) -> None:
    """The ``medssl`` console script: :func:`main`, then exit with its status.

    After a training stage (:data:`FAST_EXIT`) that returned normally -- its
    metrics.json, checkpoints and MLflow records are written and closed by
    then -- the logging handlers and standard streams are flushed and the
    process leaves with ``os._exit``, skipping the interpreter's teardown. An
    uncaught exception takes the normal path (traceback, atexit handlers).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    rc = main(args)
    if getattr(build_parser().parse_known_args(args)[0], "command", None) in FAST_EXIT:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run()
