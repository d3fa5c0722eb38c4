#!/usr/bin/env bash
# Prepare, on a machine with internet, what benchmarks/gpu_check.sh carries to a GPU machine that has none:
#   .data/cifar10-jpeg.tar.gz   CIFAR-10 (from DATA, default ../shared/data/cifar10-jpeg.tar.gz)
#   .whl/                       wheels for CPython 3.12 on x86-64 Linux of the packages lossbench needs beyond
#                               what such a machine usually has (torch, torchvision, typer, rich, pandas, pyyaml,
#                               matplotlib, scipy, scikit-learn, pytest): pydantic and its own dependencies,
#                               at the versions of uv.lock.
# Both folders are git-ignored. Usage: bash benchmarks/gpu_prepare.sh [DATA]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/cifar10-jpeg.tar.gz}"
if [[ ! -f "$data" ]]; then
  echo "error: no CIFAR-10 archive at $data (give its path as the first argument)" >&2
  exit 2
fi
mkdir -p .data .whl
cp -f "$data" .data/cifar10-jpeg.tar.gz

locked() {  # the version uv.lock pins for a package
  awk -v name="$1" '$0 == "name = \"" name "\"" {getline; gsub(/version = |"/, ""); print; exit}' uv.lock
}
for package in pydantic pydantic-core annotated-types typing-inspection; do
  version=$(locked "$package")
  if [[ -z "$version" ]]; then
    echo "error: $package is not in uv.lock" >&2
    exit 2
  fi
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$package==$version"
done
ls -l .data .whl
du -sh .data .whl
