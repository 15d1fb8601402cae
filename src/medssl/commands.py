"""The ``medssl`` subcommands: one ``cmd_<name>(args)`` per command of :mod:`medssl.cli`.

Each reads only its part of the configuration (``--params`` merged with any
``--configfile`` layers, :mod:`medssl.layers`) and imports what it runs lazily,
so that ``medssl --help`` and the light commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("medssl")


def _params(args: argparse.Namespace):
    from medssl import layers

    return layers.load(args.params, args.configfile or ())


def _source(args: argparse.Namespace) -> str:
    """The configuration's name in messages: params.yaml, with its --configfile layers."""
    return " + ".join([str(args.params), *(args.configfile or [])])


def cmd_check(args: argparse.Namespace) -> int:
    from medssl.data.leakage import find_leaks

    p = _params(args)
    leaks, unchecked = find_leaks(p)
    for leak in leaks:
        print(f"{_source(args)}: test-set leakage: {leak}", file=sys.stderr)
    links = []
    if args.dvc:
        from medssl import paths
        from medssl.data.dvclinks import check

        links = check(paths.root())
        for fault in links:
            print(f"error: {fault}", file=sys.stderr)
    if leaks or links:
        return 1
    print(f"{_source(args)}: valid ({len(p.datasets)} datasets, {len(p.methods)} methods, "
          f"{len(p.studies)} studies: {', '.join(p.studies)})")
    if unchecked:
        print(f"leakage: not preprocessed yet, checked when pre-training starts: {', '.join(unchecked)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from medssl import layers
    from medssl.io import write_text
    from medssl.yamlfile import dumps

    text = dumps(layers.materialise(args.params, args.configfile or (), only_targets=args.only_targets))
    if args.output:
        what = _source(args) + (", target studies only" if args.only_targets else "")
        write_text(args.output, f"# written by medssl config: {what}\n" + text)
        print(f"wrote {args.output} ({_source(args)})")
    else:
        sys.stdout.write(text)
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
    names = _datasets(p, args.datasets)
    for name in names:
        out = fetch(name, resolve(p, name), force=args.force, progress=args.progress)
        print(f"{name}: {out}")
    from medssl import paths
    from medssl.data.dvclinks import check

    for fault in check(paths.root(), names):  # only what was fetched; the DVC data stage refuses it
        log.warning("%s (`medssl check --dvc` refuses it)", fault.splitlines()[0] + " DVC will not version it")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from medssl.data.catalog import resolve
    from medssl.data.validate import validate_dataset

    p = _params(args)
    bad = 0
    for name in _datasets(p, args.datasets):
        report = validate_dataset(name, resolve(p, name), full=not args.headers_only, progress=args.progress)
        for line in report.lines():
            print(line)
        print(report.summary())
        bad += not report.ok
    return 1 if bad else 0


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


def _run_row(args: argparse.Namespace, kind: str, row: str, what: str, run_one, label: str) -> int:
    """Run every ``--seed`` of one row of a template / stn / uda study in this process; a wrong
    study or row name fails once, before any seed (:func:`medssl.train.common.run_seeds`)."""
    from medssl.train.common import run_seeds

    p = _params(args)
    _known(args.study, p.studies, "study")
    st, _ = p.study_row(args.study, kind, row, what=what)
    if kind == "uda":
        st.direction(args.direction)
    run_seeds(lambda seed: run_one(p, seed), args.seed or [0], f"{kind} {args.study} {label}")
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    from medssl.template.study import run_template

    return _run_row(args, "template", args.model, "model", lambda p, seed: run_template(
        p, args.study, args.model, seed, progress=args.progress), args.model)


def cmd_stn(args: argparse.Namespace) -> int:
    from medssl.stn.study import run_stn

    return _run_row(args, "stn", args.model, "model", lambda p, seed: run_stn(
        p, args.study, args.model, seed, progress=args.progress), args.model)


def cmd_uda(args: argparse.Namespace) -> int:
    from medssl.uda.study import run_uda

    return _run_row(args, "uda", args.method, "method", lambda p, seed: run_uda(
        p, args.study, args.method, args.direction, seed, progress=args.progress),
        f"{args.method} {args.direction}")


def cmd_table(args: argparse.Namespace) -> int:
    from medssl.report.tables import write_study_tables

    p = _params(args)
    _known(args.study, p.studies, "study")
    written = write_study_tables(p, args.study)
    return _report_written(written, args.show)


def cmd_figures(args: argparse.Namespace) -> int:
    from medssl.report.figures import write_study_figures

    p = _params(args)
    _known(args.study, p.studies, "study")
    for name, path in write_study_figures(p, args.study).items():
        print(f"{name}: {path}")
    return 0


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
