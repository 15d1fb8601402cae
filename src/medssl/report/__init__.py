"""Reports of a study: results tables (:mod:`medssl.report.tables`) and figures."""

from __future__ import annotations
