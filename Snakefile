# medssl workflow: fetch -> preprocess -> pretrain -> downstream -> tables.
# Thin on purpose: the configuration is params.yaml (validated in common.smk),
# the rules are grouped by stage in workflow/rules, every job calls `medssl`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/template.smk"
include: "workflow/rules/uda.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_tables(),
