# The two commands of the README: `make test` (set up and check everything) and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: test lint types unit venv clean bench demo mutate screenshots

venv: $(STAMP)

# What running needs (`make demo`); what developing needs on top of it (`make test`).
$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Lint and types run beside the tests, which spend most of their time waiting on RabbitMQ,
# PostgreSQL and the daemons they start; any of the three failing fails `make test`.
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 lint types unit

lint: $(STAMP)
	$(BIN)/ruff check bureaucrat tests benchmarks examples
	$(BIN)/ruff format --check bureaucrat tests benchmarks examples

types: $(STAMP)
	$(BIN)/mypy

# The tests share nothing but RabbitMQ and PostgreSQL (queues, schemas and files of their own),
# so they run on JOBS processes; the exclusive ones (a RabbitMQ restart) run alone afterwards.
JOBS ?= 2
unit: $(STAMP)
	$(BIN)/pytest -n $(JOBS) -m "not exclusive"
	$(BIN)/pytest -m exclusive

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_steps.py
	$(BIN)/python benchmarks/expressions.py
	$(BIN)/python benchmarks/throughput.py

# Mutation testing, not part of `make test`: mutmut (configured in pyproject.toml) mutates the
# engine, the expressions and the message path and runs the fast tests against each mutant,
# then prints the score per file and writes every survivor's diff to mutants/survivors.txt
# (`mutmut show NAME` shows one). Work lives in mutants/.
# MUTANTS narrows the run: make mutate MUTANTS='bureaucrat.engine.step.*'
mutate: $(STAMP)
	$(BIN)/mutmut run $(MUTANTS)
	$(BIN)/python tests/mutation_report.py --survivors mutants/survivors.txt

# The README's picture of the web console (docs/console-instance.png), taken by its browser test
# against a real daemon (RabbitMQ and Chromium needed, as for `make test`).
screenshots: $(STAMP)
	BUREAUCRAT_SCREENSHOTS=1 $(BIN)/pytest tests/test_web.py -k screenshot

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis mutants

demo: $(RUNTIME)
	$(BIN)/python examples/demo.py
