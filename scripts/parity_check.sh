#!/usr/bin/env bash
# make parity: lmms-eval 0.7.3's own Qwen chat wrappers against `protocol=lmms_eval method=none`,
# sample by sample (docs/harness.md, "Protocols"). Builds the parity environment first
# (scripts/parity_env.sh: torch + torchvision + lmms-eval, about 8.5 GB), then:
#   1. the needle model (Qwen2.5-VL) on 16 needle questions and two real clips, at lmms-eval's
#      defaults and at max_num_frames=64,min_pixels=max_pixels=3136: every answer identical;
#   2. a tiny random Qwen3-VL (the qwen3_vl wrapper) on 4 needle questions and the two clips:
#      frames, grid, token ids identical and the same first token (its answers are noise).
# Exit 1 on any difference. OUT (default parity_out) keeps every output and the tables.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/parity_out}"
PARITY_VENV="${PARITY_VENV:-$ROOT/.venv-parity}"
cd "$ROOT"
bash scripts/parity_env.sh
PY="$PARITY_VENV/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
status=0
run() { echo "+ $*" >&2; "$@"; }

# 1. Qwen2.5-VL: the needle model
NEEDLE="$OUT/needle_data"
run "$PY" scripts/parity.py --out "$OUT/lmms_default" --needle "$NEEDLE" > "$OUT/lmms_default.log" 2>&1
run "$PY" scripts/parity.py --ours --out "$OUT/ours_default" --needle "$NEEDLE" -- protocol=lmms_eval method=none \
    > "$OUT/ours_default.log" 2>&1
MATCHED="max_num_frames=64,min_pixels=3136,max_pixels=3136"
run "$PY" scripts/parity.py --out "$OUT/lmms_matched" --needle "$NEEDLE" --model-args "$MATCHED" > "$OUT/lmms_matched.log" 2>&1
run "$PY" scripts/parity.py --ours --out "$OUT/ours_matched" --needle "$NEEDLE" -- protocol=lmms_eval method=none \
    sampling.max_frames=64 sampling.min_pixels=3136 sampling.max_pixels=3136 > "$OUT/ours_matched.log" 2>&1
for kind in default matched; do
    "$PY" scripts/parity.py --compare "$OUT/lmms_$kind" "$OUT/ours_$kind" --require answers | tee "$OUT/compare_$kind.txt" \
        || status=1
done

# 2. Qwen3-VL: a tiny random checkpoint (16 px patches: 64 px needle frames)
TINY="$OUT/tiny_qwen3_vl"
[ -f "$TINY/config.json" ] || run "$PY" -m retake.cli tiny-model --arch qwen3_vl "$TINY" > /dev/null
NEEDLE64="$OUT/needle_data_64"
run "$PY" scripts/parity.py --checkpoint "$TINY" --out "$OUT/lmms_qwen3_vl" --needle "$NEEDLE64" --needle-count 4 \
    > "$OUT/lmms_qwen3_vl.log" 2>&1
run "$PY" scripts/parity.py --ours --checkpoint "$TINY" --out "$OUT/ours_qwen3_vl" --needle "$NEEDLE64" --needle-count 4 \
    -- protocol=lmms_eval method=none > "$OUT/ours_qwen3_vl.log" 2>&1
"$PY" scripts/parity.py --compare "$OUT/lmms_qwen3_vl" "$OUT/ours_qwen3_vl" --require inputs | tee "$OUT/compare_qwen3_vl.txt" \
    || status=1

date -u +"parity checked %Y-%m-%d %H:%M UTC" | tee "$OUT/checked.txt"
exit $status
