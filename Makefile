# The two front-door commands: `make run` sets up and starts the app, `make test` sets up and runs the tests.
.PHONY: setup setup-dev run test

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

run: setup
	.venv/bin/python app.py

test: setup-dev
	.venv/bin/python -m pytest
