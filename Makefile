# amtrain: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where datasets live: $AMTRAIN_DATA if set, else ../shared/data beside this checkout
# when it holds MNIST, else ./data (torchvision downloads there).
AMTRAIN_DATA ?= $(if $(wildcard ../shared/data/MNIST/raw),$(abspath ../shared/data),$(CURDIR)/data)
export AMTRAIN_DATA

.DEFAULT_GOAL := help
.PHONY: help install run test test-slow smoke figures reproduce-paper reproduce-paper-quick clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv and install amtrain (editable) with its test tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

run: install ## one real run: AM-Adam on MNIST, 784-100-100-10, batch 200, 1 epoch
	$(BIN)/amtrain dataset=mnist optim=am_adam

test: install ## the test suite (CPU, no network, two workers, 8-18 minutes on 2 cores; includes make smoke end to end)
	$(BIN)/python -m pytest -q

test-slow: install ## the slow tests: five-epoch accuracy on the real MNIST (needs the data)
	$(BIN)/python -m pytest -q -m slow

# Hydra launcher for the sweeps: basic (serial), joblib (local processes), submitit_slurm
# (a cluster; put its settings in conf/local/slurm.yaml and add ARGS=+local=slurm).
LAUNCHER ?= basic
ARGS ?=
# Which figures and tables of conf/reproduce.yaml: all, or names joined by commas
# (FIGURES=fig1_mnist_first_epoch,fig8_binary); the reports still cover every CSV there.
FIGURES ?= all
REPRODUCE = $(BIN)/python scripts/reproduce.py --launcher $(LAUNCHER) --figures $(FIGURES)

smoke: install ## every figure's sweep, tiny budget, on tiny generated files (about a minute) -> results/smoke
	$(REPRODUCE) --protocol smoke --runs multirun/smoke -- $(ARGS)
	$(BIN)/python scripts/report.py --results results/smoke --out results/smoke/REPORT.md

figures: install ## redraw every figure from the committed CSVs in results/ (seconds)
	$(BIN)/python scripts/figures/draw_all.py

reproduce-paper: install ## the paper's full protocol, every figure -> results/full, results/REPORT.md
	$(REPRODUCE) --protocol full -- $(ARGS)
	$(BIN)/python scripts/report.py --results results/full --out results/full/REPORT.md
	$(BIN)/python scripts/report.py --results results/full --fallback results/quick --out results/REPORT.md

reproduce-paper-quick: install ## reduced protocol, under 2 hours on a 2-core CPU -> results/quick, results/REPORT.md
	$(REPRODUCE) --protocol quick -- $(ARGS)
	$(BIN)/python scripts/report.py --results results/quick --out results/quick/REPORT.md
	$(BIN)/python scripts/report.py --results results/full --fallback results/quick --out results/REPORT.md

clean: ## remove run directories (runs/, multirun/); keeps .venv and data
	rm -rf runs multirun outputs
