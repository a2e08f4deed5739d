#!/usr/bin/env bash
# Every GPU figure issue #5 asks for, in one command, on a machine with one CUDA GPU and PyTorch installed:
#
#   bash benchmarks/gpu.sh                  # every part, in this order
#   bash benchmarks/gpu.sh fp32 bf16        # only those parts
#
#   ARCHS=resnet18 REPEATS=2 bash benchmarks/gpu.sh bf16   # one architecture, fewer timed rounds
#
# Not yet run on a GPU: the times are estimates from the FLOP counts (about 10 minutes for each of fp32 and
# bf16 on an H100/H200, 3 for compile, 1 for tests); where a command may run at most 10 minutes, run one
# part and one architecture at a time (ARCHS).
#
# Parts:
#   tests    the GPU side of the test suite: a member trained alone and with others on its own stream give
#            the same logits (fp32, same device), bf16 agrees with fp32 within seed noise, CUDA checkpoints
#   fp32     ResNet-18, VGG-16-BN, ViT at the paper's sizes on data of CIFAR-100's shape: the reference loop
#            (fp32, DataLoader, one model) against the fast path in fp32, 1, 4 and 8 members at once on
#            streams, and 4 processes at once (one member each)
#   bf16     the same, fast path in bf16 with channels_last, 1, 4, 8 and 16 members at once on streams and
#            4 and 8 processes: the figures for the targets (ResNet-18 >= 5x the reference's member
#            throughput; >= 30% of the bf16 peak)
#   compile  ResNet-18 in bf16 + channels_last, with torch.compile, 1 and 8 members at once
#
# Each part writes its log (and the benchmark's JSON) to $RESULTS, default $OUT when set (the device tool's
# output folder), else benchmarks/results/gpu-<UTC time>. Copy the tables into benchmarks/RESULTS.md with
# the date, the device and the command. Each throughput part prints its own reference rows: compare ratios
# within one run, not absolute times across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PARTS=${*:-tests fp32 bf16 compile}
for part in $PARTS; do
    case $part in
        tests|fp32|bf16|compile) ;;
        *) echo "benchmarks/gpu.sh: unknown part '$part': use tests, fp32, bf16 or compile" >&2; exit 2 ;;
    esac
done
if ! python3 -c "import kdclaims" 2>/dev/null; then
    # offline machines: an editable install of this checkout with what is already there, else the path
    python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
        || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'benchmarks/gpu.sh: no CUDA device')"
RESULTS=${RESULTS:-${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$RESULTS"
nvidia-smi -L > "$RESULTS/device.txt" 2>&1 || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee -a "$RESULTS/device.txt"

ARCHS=${ARCHS:-resnet18,vgg16_bn,vit}
REPEATS=${REPEATS:-3}
bench() {  # bench NAME ARGS...: one run of the throughput script, log and JSON under $RESULTS
    local name=$1; shift
    python3 benchmarks/train_throughput.py --device cuda --scale paper --repeats "$REPEATS" \
        --json "$RESULTS/$name.json" "$@" 2>&1 \
        | tee "$RESULTS/$name.log" || echo "== $name FAILED: see $RESULTS/$name.log; going on"
}

for part in $PARTS; do
    echo "== $part ($(date -u +%H:%M:%S) UTC)"
    case $part in
        tests)
            python3 -m pytest tests/test_training.py tests/test_precision.py -q -p no:cacheprovider 2>&1 \
                | tee "$RESULTS/tests.log" || echo "== tests FAILED: see $RESULTS/tests.log; going on" ;;
        fp32)
            bench "fp32-${ARCHS//,/-}" --archs "$ARCHS" --precision fp32 --concurrent 1,4,8 --processes 4 ;;
        bf16)
            bench "bf16-${ARCHS//,/-}" --archs "$ARCHS" --precision bf16 --channels-last --concurrent 1,4,8,16 \
                --processes 4,8 ;;
        compile)
            bench compile --archs resnet18 --precision bf16 --channels-last --compile --concurrent 1,8 ;;
    esac
done
echo "results in $RESULTS"
