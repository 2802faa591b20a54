# Source before running a control: the repository's pytest_quant, offline, one torch thread.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$HERE/../.." HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export GPTQ_CONTROLS="${GPTQ_CONTROLS:-/tmp/gptq}"   # results/, logs/, cache/ go here (never into the repository)
PY="$HERE/../../.venv/bin/python"
