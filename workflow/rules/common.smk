# Validation of the configuration and the path helpers every rule uses.
import hashlib
import json
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from medssl import config as medssl_config
from medssl import paths
from medssl.report.inputs import study_metrics

# Every configuration file Snakemake read (params.yaml and each --configfile layer), strictly: a key
# repeated in one mapping, which YAML silently resolves to the last, is an error naming file and lines.
from medssl.yamlfile import DuplicateKeyError, read_yaml
from medssl.yamlfile import dumps as yaml_dumps

for _file in workflow.configfiles:
    try:
        read_yaml(_file)
    except DuplicateKeyError as exc:
        raise WorkflowError(f"invalid configuration: {exc}")



def _culprit():
    """The first layer after which the merged configuration stops being valid (params.yaml, then each
    --configfile in order, then --config): the file to blame in the error message."""
    from medssl.layers import first_invalid

    cli = [str(f) for f in workflow.config_settings.configfiles]  # --configfile, merged over the Snakefile's
    names = [str(f) for f in workflow.configfiles if str(f) not in cli] + cli
    return first_invalid([(n, read_yaml(n) or {}) for n in names], otherwise="--config on the command line")


# The pydantic check first: its message names the file to fix and the key; then the JSON schema.
try:
    P = medssl_config.parse(config, "params.yaml (with any --configfile/--config)")
except medssl_config.ConfigError as exc:
    raise WorkflowError(f"{exc}\n(the configuration becomes invalid in {_culprit()})")
validate(config, workflow.source_path("../schemas/params.schema.json"), set_default=False)

# Test-set leakage, over the datasets already preprocessed (the pretrain and
# downstream jobs check the rest before they train): medssl.data.leakage.
from medssl.data.leakage import find_leaks

_leaks, _ = find_leaks(P)
if _leaks:
    raise WorkflowError("test-set leakage: " + "; ".join(map(str, _leaks)))

# Every job reads the configuration this run was parsed with (params.yaml merged with any
# --configfile / --config) from a file of its own, named by its content:
# .medssl/run/params-<sha256[:16]>.yaml, written atomically and only when absent. A second parse
# while jobs run (`snakemake -n`, --lint, another --configfile) writes its own file and never
# changes this one. The jobs get the path in $MEDSSL_PARAMS (the default of `medssl --params`),
# not on their command lines: Snakemake reruns a job when its rule's shell text (the `code`
# trigger) or its params change, so a path there would rerun every job after any config edit.
# On SLURM each job parses the Snakefile again on its node: the same configuration gives the same
# file. .medssl/params.yaml is a copy of the last configuration parsed, for people; no job reads it.
_text = yaml_dumps(config)  # key order is row order (e.g. template models)
RUN_PARAMS = f".medssl/run/params-{hashlib.sha256(_text.encode()).hexdigest()[:16]}.yaml"


def _write_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


if not os.path.exists(RUN_PARAMS):
    _write_atomic(RUN_PARAMS, _text)
_last = f"# the configuration Snakemake parsed last; its jobs read {RUN_PARAMS}\n{_text}"
if not os.path.exists(".medssl/params.yaml") or open(".medssl/params.yaml").read() != _last:
    _write_atomic(".medssl/params.yaml", _last)
os.environ["MEDSSL_PARAMS"] = RUN_PARAMS


envvars:
    "MEDSSL_PARAMS",  # declared for executors that pass only declared variables to their jobs


wildcard_constraints:
    dataset="[A-Za-z0-9_\-]+",
    study="[A-Za-z0-9_\-]+",
    method="[A-Za-z0-9_\-]+",
    protocol="linear|finetune",
    frac="[0-9.]+",
    seed="[0-9]+",


def section(obj):
    """JSON text of a config section: the `params` of a rule, so a change reruns its jobs."""
    return json.dumps(obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj, sort_keys=True)


def study_datasets(study):
    """The datasets a study needs preprocessed (none for stn: its digits ship with scikit-learn)."""
    return P.study_datasets(study)


def ssl_studies_all():
    """Every ssl study of params.yaml (targets or not: each may be built by name)."""
    return P.studies_of_kind("ssl")


def ssl_studies():
    """The ssl studies the default target builds (pretrain_all pre-trains their methods)."""
    targets = set(P.target_studies())
    return [s for s in P.studies_of_kind("ssl") if s in targets]


def pretrain_inputs(study):
    """The datalists of a study's pre-training corpus (several when pooled)."""
    return [str(paths.datalist(d)) for d in P.studies[study].pretrain_datasets]


def held_out_inputs(study):
    """The datalists of a study's downstream datasets that are not also a corpus (the leakage check reads them)."""
    st = P.studies[study]
    return [str(paths.datalist(d)) for d in st.datasets if d not in st.pretrain_datasets]


def study_runs(study):
    """Every metrics.json of a study (medssl.report.inputs.study_metrics): exactly what its table reads."""
    return [str(p) for p in study_metrics(P, study)]


def seed_flags(study):
    """`--seed s` for every seed of ``study``: the command line of a row whose seeds run in one job."""
    return " ".join(f"--seed {s}" for s in P.studies[study].seeds)


def alternatives(names):
    """A wildcard constraint matching exactly one of ``names``."""
    return "|".join(re.escape(n) for n in names)


def all_tables():
    """The tables of the default target: the studies in `targets` (paper presets), else all."""
    tables = [str(paths.table(s, ext)) for s in P.target_studies() for ext in ("md", "tex", "csv")]
    pretext = [str(paths.pretext_table(ext)) for ext in ("md", "csv")] if ssl_studies() else []
    claims = [str(paths.claims(ext)) for ext in ("md", "csv")] if claim_studies() else []
    return tables + pretext + claims


def claim_studies():
    """The target studies that a claim of medssl.report.claims names."""
    from medssl.report.claims import CLAIMS

    targets = set(P.target_studies())
    return [s for s in dict.fromkeys(c.study for c in CLAIMS) if s in P.studies and s in targets]


onstart:
    shell("medssl init-tracking")  # reads $MEDSSL_PARAMS, as the jobs do
