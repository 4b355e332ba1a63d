# The front-door commands: `make run` sets up and starts the app, `make test` sets up and runs every test (CI runs
# it), `make test-fast` the ones that need no browser, no process of their own, no real offline model and no
# training until a model learns: the tier for day-to-day work.
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
	.venv/bin/python -m pytest -n 2 -m "not integration and not browser and not worker and not slow"
