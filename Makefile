# The front-door commands: `make run` sets up and starts the app, `make test` sets up and runs every test (CI runs
# it), `make test-fast` the tests that need no browser, no process of their own and no real offline model.
.PHONY: setup setup-dev run test test-fast

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

run: setup
	.venv/bin/python app.py

test: setup-dev
	.venv/bin/python -m pytest

test-fast: setup-dev
	.venv/bin/python -m pytest -m "not integration and not browser and not worker"
