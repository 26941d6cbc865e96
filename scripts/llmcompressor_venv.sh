#!/usr/bin/env bash
# Create (once) a separate virtual environment holding llm-compressor, for checking exported recipes.
#
# Why separate: llm-compressor 0.14.0.1 pins transformers<=5.17.0 and torch<=2.14.0, which need not
# agree with the project's own environment. torch is installed first, pinned, so that pip keeps the
# CPU build instead of resolving llm-compressor's torch requirement to a CUDA build.
#
# Usage: scripts/llmcompressor_venv.sh [VENV_DIR]    (default: .venv-llmc in the repository root)
# Prints the venv's python path as its last line.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${1:-${REPO_ROOT}/.venv-llmc}"
PYTHON="${PYTHON:-python3}"
LLMCOMPRESSOR_VERSION="${LLMCOMPRESSOR_VERSION:-0.14.0.1}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "${VENV_DIR}/bin/python" ]; then
    "${PYTHON}" -m venv "${VENV_DIR}"
fi
VENV_PY="${VENV_DIR}/bin/python"

if ! "${VENV_PY}" -c "import llmcompressor" >/dev/null 2>&1; then
    "${VENV_PY}" -m pip install --quiet --upgrade pip
    "${VENV_PY}" -m pip install --quiet "torch==${TORCH_VERSION}"
    "${VENV_PY}" -m pip install --quiet "torch==${TORCH_VERSION}" "llmcompressor==${LLMCOMPRESSOR_VERSION}" pyyaml
fi

# paretoprune itself, without its dependencies: the check needs only the recipe code, and the
# editable install is what maps the top-level metrics/ folder to paretoprune.metrics.
if ! "${VENV_PY}" -c "import paretoprune.metrics" >/dev/null 2>&1; then
    "${VENV_PY}" -m pip install --quiet --no-deps -e "${REPO_ROOT}"
fi

echo "${VENV_PY}"
