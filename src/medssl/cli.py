"""``medssl <stage>``: the one entry point every Snakemake rule and DVC stage calls.

The parser, the error handling and the exit; the subcommands are in
:mod:`medssl.commands`. Each reads only its own part of ``params.yaml``
(``--params`` to use another file, ``--configfile`` to merge layers over it) and
writes only the outputs named in ``medssl.paths``.
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
from medssl.commands import (
    cmd_check,
    cmd_claims,
    cmd_config,
    cmd_datasets,
    cmd_downstream,
    cmd_fetch,
    cmd_figures,
    cmd_init_tracking,
    cmd_preprocess,
    cmd_pretext_table,
    cmd_pretrain,
    cmd_schema,
    cmd_stn,
    cmd_table,
    cmd_template,
    cmd_uda,
    cmd_validate,
)

log = logging.getLogger("medssl")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medssl", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"medssl {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=os.environ.get("MEDSSL_PARAMS", "params.yaml"),
                        help="configuration file (default: params.yaml or $MEDSSL_PARAMS)")
    common.add_argument("--configfile", action="append", metavar="FILE",
                        help="a configuration merged over --params, as Snakemake merges its --configfile; repeat "
                             "the flag for several layers (one file per flag, so it never takes a positional "
                             "argument)")
    common.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide progress bars (they show only on a terminal anyway)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True, metavar="<stage>")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    sp = add("check", cmd_check, "validate params.yaml (unknown keys, methods, datasets are errors) and check "
             "that no study pre-trains on a downstream validation / test case (by raw-file hash, case id and "
             "subject, over the datasets already preprocessed); exit 1 on a leak")
    sp.add_argument("--dvc", action="store_true",
                    help="also refuse links to folders outside data/raw below it, which DVC would not version "
                         "(the data stage of dvc.yaml runs this)")
    sp = add("config", cmd_config, "print (or write) the configuration with its --configfile layers merged, as "
             "the jobs of a Snakemake run with the same layers read it; `-o params.yaml --only-targets` is the "
             "route for DVC, which reads params.yaml only")
    sp.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    sp.add_argument("--only-targets", action="store_true",
                    help="keep only the studies named by `targets` (dvc.yaml runs every study of params.yaml)")
    sp = add("schema", cmd_schema, "print (or write) the JSON schema of params.yaml")
    sp.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    sp = add("fetch", cmd_fetch, "download / generate / check raw data into data/raw/<dataset>")
    sp.add_argument("datasets", nargs="*",
                    help="dataset names from params.yaml, 'all', or none for the datasets of the studies")
    sp.add_argument("--force", action="store_true", help="fetch again even when present")
    sp = add("validate", cmd_validate, "open every case's image and label in data/raw/<dataset> and list every "
             "fault at once (missing, empty, truncated or unreadable files, missing labels, files added, removed "
             "or resized since fetch), one line per file; exit 1 when any is found")
    sp.add_argument("datasets", nargs="*",
                    help="dataset names from params.yaml, 'all', or none for the datasets of the studies")
    sp.add_argument("--headers-only", action="store_true",
                    help="read only the file headers (fast; a truncated compressed file goes unnoticed)")
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
    sp = add("table", cmd_table, "write results/<study>/table.{md,tex,csv} and summary.json (the DVC metrics "
             "file) from the metrics.json files; table.md links the study's figures (medssl figures)")
    sp.add_argument("study")
    sp.add_argument("--show", action="store_true", help="print the Markdown table")
    sp = add("figures", cmd_figures, "write results/<study>/figures/*.png (training curves; ssl: metric against "
             "label fraction, pretext score at step 0 and end) and results/<study>/curves.csv from the study's "
             "metrics.json (and, for ssl, its pretext.json) files; deterministic PNGs without metadata")
    sp.add_argument("study")
    sp = add("pretext-table", cmd_pretext_table, "write results/pretext.{md,csv}: each pre-training method's "
             "own task (restoration PSNR, warped-label Dice, patch matching) on held-out volumes at step 0 and "
             "at the end, from checkpoints/<study>/<method>/pretext.json")
    sp.add_argument("--show", action="store_true", help="print the Markdown table")
    sp = add("claims", cmd_claims, "write results/claims.{md,csv}: each claim of the four papers (a row beats "
             "another on a metric) tested on this run's results, paired t-test across seeds, with a verdict")
    sp.add_argument("--show", action="store_true", help="print the Markdown table")
    add("init-tracking", cmd_init_tracking, "create the MLflow store once before jobs fan out")
    return ap


def _permission_message(exc: PermissionError) -> str:
    """What a PermissionError means for the user: the path, and whether it is the folder."""
    path = Path(exc.filename) if exc.filename else None
    if path is None:
        return f"permission denied ({exc.strerror or exc})"
    folder = path if path.is_dir() else path.parent
    if folder.exists() and not os.access(folder, os.W_OK):
        return (f"cannot write in {folder}: the folder is read-only for this user (permission denied); "
                "make it writable or point the output elsewhere (paths: in params.yaml)")
    return f"{path}: permission denied ({exc.strerror or 'not allowed'})"


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
    except PermissionError as exc:  # a read-only output folder, a file of another user
        print(f"error: {_permission_message(exc)}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # once: it used to be logged and printed
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
