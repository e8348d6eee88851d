#!/usr/bin/env bash
# The whole GPU check of the fast paths (docs/performance.md) in one go, on a lent GPU machine.
#
# The lent machine has torch (2.11, CUDA) and transformers (5.17) but not gymnasium,
# stable-baselines3, sb3-contrib or vaderSentiment, and no network: they travel as wheels
# in .whl/ (gitignored). Two steps:
#
#   1. here, with PyPI reachable, in the repo root (once):
#        bash benchmarks/gpu_check.sh --make-wheels
#   2. on the GPU machine, in the repo root, with .whl carried:
#        bash benchmarks/gpu_check.sh            # about 5-8 minutes on one H100 / H200
#      (device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600))
#   3. then, as a second call (its own time limit), issue 18's peer column:
#        bash benchmarks/gpu_check.sh --peer     # benchmarks/peer_trl.py --device cuda at 64 and 256 completions
#      TRL 1.12 is not among the wheels (it needs datasets / pyarrow: more than the 64 MiB a call
#      carries), so unless TRL imports there it runs --skip-trl: TokenPPO (fused GELU, its default), its
#      variant row (+ compiled decode with CUDA graphs) and the floor (generate + RM + reference forward).
#
# Output: tests, then the markdown tables of benchmarks/agent_throughput.py --device cuda and
# benchmarks/env_throughput.py, each also written under $OUT (or ./gpu_check_out).
set -uo pipefail

WHEELS=(gymnasium==1.4.0 farama-notifications==0.0.6 stable-baselines3==2.9.2 sb3-contrib==2.9.2 vaderSentiment==3.3.2)

if [ "${1:-}" = "--make-wheels" ]; then
    mkdir -p .whl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" || exit 1
    ls -l .whl
    exit 0
fi

OUT_DIR=${OUT:-gpu_check_out}
mkdir -p "$OUT_DIR"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [ "${1:-}" = "--peer" ]; then
    skip=(--skip-trl)
    if python3 -c "import trl.experimental.ppo" 2>/dev/null; then skip=(); fi
    echo "## peer (issue 18): benchmarks/peer_trl.py --device cuda ${skip[*]}"
    timeout 500 python3 benchmarks/peer_trl.py --device cuda --completions 64 256 --repeats 3 "${skip[@]}" 2>&1 \
        | grep -v -e "Writing model shards" -e "^USDT:" | tee "$OUT_DIR/peer_trl.md"
    exit 0
fi

python3 - <<'EOF' | tee "$OUT_DIR/versions.txt"
import platform, torch, transformers
print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"CUDA {torch.version.cuda}, GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
EOF

echo "## tests (GPU + fast-path CPU tests)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_device_rollout.py \
    2>&1 | tee "$OUT_DIR/tests.txt"

echo "## agent throughput (GPT-2-small-shaped actor and RM, random weights, 48 new tokens)"
timeout 220 python3 benchmarks/agent_throughput.py --device cuda --policy gpt2-small --update-policy same \
    --sizes 16 64 256 1024 --cache-sizes 16 64 --repeats 3 2>&1 | grep -v "Writing model shards" \
    | tee "$OUT_DIR/agent_throughput.md"

echo "## opt-in fast options: compile_decode (torch.compile, CUDA graphs), sampler=inverse_cdf, both"
timeout 110 python3 benchmarks/agent_throughput.py --device cuda --policy gpt2-small --sizes --cache-sizes \
    --compile-sizes 64 256 --no-update --repeats 3 2>&1 | grep -v "Writing model shards" \
    | tee "$OUT_DIR/fast_options.md"

echo "## where one rollout spends its time (GPT-2-small shape, 64 envs: cProfile phases, torch.profiler operators)"
timeout 50 python3 benchmarks/agent_throughput.py --device cuda --policy gpt2-small --profile 64 --repeats 3 \
    2>&1 | grep -v -e "Writing model shards" -e "^USDT:" | tee "$OUT_DIR/profile.md"

echo "## env throughput and ABC / sparse scoring"
timeout 70 python3 -m benchmarks.env_throughput --device cuda --sizes 1 16 64 256 --steps 100 --rm-batch 64 \
    2>&1 | tee "$OUT_DIR/env_throughput.md"
