#!/usr/bin/env bash
# Pretraining speed on a CUDA GPU, in one command: the training-step table (ViT-S/14 and ViT-B/14,
# full recipe 2 x 224 + 8 x 98 crops, batch 32/64/128, bf16, eager and torch.compile, plus fp32,
# packed crops, the reference step and a naive timm baseline at batch 64), the data-pipeline table and
# `dermino embed` across torchrun processes (one per GPU: images/s and scaling efficiency).
#
#   bash benchmarks/gpu_suite.sh            # everything (~15 min on an H100-class GPU)
#   bash benchmarks/gpu_suite.sh eager      # eager rows + data pipeline + embed across processes (~7 min)
#   bash benchmarks/gpu_suite.sh compile    # torch.compile rows only (~8 min: each row compiles)
#   bash benchmarks/gpu_suite.sh gram       # evidence_gram.py at ViT-S/14, 224 px: no Gram / Gram anchoring /
#                                           # Gram + high-res stage (~8 min estimated; not part of "all";
#                                           # needs DERMINO_SHARED_DATA = the folder with ham10000/, isic2017/, ph2/)
#
# Tables go to stdout; JSON to $OUT when set (e.g. a job's output folder), else benchmarks/results/.
# PYTHON picks the interpreter (default: python); the repository's src/ goes first on the path.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEST=${OUT:-benchmarks/results}
PART=${1:-all}
mkdir -p "$DEST"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# rows of pretrain_throughput.py's gpu grid: (small, base) x (32, 64, 128) x (eager, compile) are
# rows 0-11 (even: eager, odd: compile); 12 fp32, 13 packed, 14 packed + compile, 15 reference, 16 naive
EAGER=0,2,4,6,8,10,12,13,15,16
COMPILE=1,3,5,7,9,11,14
case "$PART" in
  all) ROWS="" ;;
  eager) ROWS=$EAGER ;;
  compile) ROWS=$COMPILE ;;
  gram) ROWS="" ;;
  *) echo "usage: $0 [all|eager|compile|gram]" >&2; exit 2 ;;
esac

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to torch: this suite needs a GPU (use pretrain_throughput.py --grid cpu)" >&2
  exit 1
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
uptime
status=0

if [ "$PART" = gram ]; then
  echo "== Gram anchoring and the high-resolution stage at ViT-S/14 (evidence_gram.py --arch small) =="
  if [ -z "${DERMINO_SHARED_DATA:-}" ]; then
    echo "DERMINO_SHARED_DATA is not set: the gram part needs the published data folder" >&2
    exit 2
  fi
  # source 19,200 images from scratch, then 3 continued runs of 19,200 (300 steps of 64) at 224 px,
  # the last 25 % of gram-hires at 336 px; monitor and a kept checkpoint every 50 steps
  "$PY" benchmarks/evidence_gram.py --arch small --device cuda --precision bf16 --workers 8 --threads 8 \
    --batch-size 64 --size 224 --local-size 98 --hires-size 336 --source-images 19200 --images 19200 \
    --epoch-size 4800 --monitor-every 50 --mask-images 64 --final-mask-images 100 \
    --out "${GRAM_RUN_DIR:-runs/evidence_gram_vits14}" --json "$DEST/evidence_gram_vits14.json" || status=$?
  uptime
  exit $status
fi

echo "== training step (pretrain_throughput.py --grid gpu${ROWS:+ --only $ROWS}) =="
"$PY" benchmarks/pretrain_throughput.py --grid gpu ${ROWS:+--only "$ROWS"} --threads 8 --timeout 420 \
  --json "$DEST/pretrain_throughput_cuda_${PART}.json" || status=$?

if [ "$PART" != compile ]; then
  echo "== data pipeline (CPU side: decode + multi-crop per core, original vs cache, workers) =="
  workers=$(( $(nproc) < 8 ? $(nproc) : 8 ))
  "$PY" benchmarks/data_pipeline.py --images 40 --repeats 3 --workers "1,2,4,$workers" --scaling-images 256 \
    --json "$DEST/data_pipeline_gpu_host.json" || status=$?

  echo "== dermino embed under torchrun (bench_embed_scaling.py: ViT-B/14 at 224 px, one process per GPU) =="
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
  procs=1; n=2
  while [ "$n" -le "$gpus" ]; do procs="$procs,$n"; n=$(( n * 2 )); done
  case ",$procs," in *",$gpus,"*|",1,") ;; *) procs="$procs,$gpus" ;; esac
  "$PY" benchmarks/bench_embed_scaling.py --device cuda --processes "$procs" --backbone dermino_vit_base_14 \
    --model-arg --image-size 224 --batch-size 128 --chunk-size 1024 --workers 6 --tile 20 \
    --out "$DEST/bench_embed_scaling_cuda.json" || status=$?
fi
uptime
exit $status
