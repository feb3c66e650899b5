#!/usr/bin/env bash
# The CUDA plugin on a real GPU: run on a lent device machine (see JOURNAL.md, 2026-11-26).
#
# The machine has torch (CUDA), transformers, peft and accelerate but no network, so the rest
# travels as wheels built or downloaded here into .whl/ (ignored by git):
#   uv build --wheel -o .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#     mlx mlx-cpu mlx-lm trl datasets dill multiprocess orjson py3langid ijson starlette \
#     uvicorn httptools
# (llguidance is imported only by `--constrain`, which these checks do not use.)
# Then, on the machine: benchmarks/peft_cuda_check.sh   (results under $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
cd /tmp && cp -r "$OLDPWD/tests" "$OLDPWD/benchmarks" . && cp "$OLDPWD/pyproject.toml" .
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft, trl, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__)"
  python3 -c "import punie, punie_peft; print('punie from', punie.__file__)"
} 2>&1 | tee "$OUT/env.txt"
# The plugin's own tests (written for CPU; on this machine torch sees the GPU).
timeout 400 python3 -m pytest -q -p no:cacheprovider --durations=10 tests/test_peft_core.py \
  tests/test_peft_rows.py tests/test_peft_train.py tests/test_peft_dpo.py tests/test_peft_grpo.py \
  2>&1 | tee "$OUT/pytest.txt"
# The same config through both backends, two alternating rounds: mlx (CPU build) vs peft (GPU).
timeout 150 python3 benchmarks/backends.py --iters 60 --rounds 2 2>&1 | tee "$OUT/backends.txt"
