#!/bin/sh
# Install emailtoken-operator into a virtual environment exactly as the image does. The
# Dockerfile runs it; so does tests/e2e/test_image_install.py, into a temporary venv.
#
#   install.sh deps VENV        create VENV (no pip in it) and install the pinned dependencies,
#                               requirements/image.txt, every file's sha256 checked, wheels only
#   install.sh app VENV [SRC]   build a wheel of the project in SRC (default .) and install it
#                               without dependencies (deps already hold all of them); the build
#                               backend comes from requirements/build.txt (sha256 checked, in a
#                               throwaway venv), not from whatever setuptools the index has today
#
# PYTHON (default python3) creates the venv and runs pip (pip >= 22.3 for --python).
set -eu
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
python=${PYTHON:-python3}
[ $# -ge 2 ] || { echo "usage: $0 deps|app VENV [SRC]" >&2; exit 2; }
step=$1
venv=$2
case $step in
deps)
  "$python" -m venv --without-pip "$venv"
  "$python" -m pip --python "$venv/bin/python" install --no-deps --require-hashes --only-binary :all: \
    -r "$here/image.txt"
  ;;
app)
  work=$(mktemp -d)
  "$python" -m venv --without-pip "$work/build"
  "$python" -m pip --python "$work/build/bin/python" install --no-deps --require-hashes --only-binary :all: \
    -r "$here/build.txt"
  "$python" -m pip --python "$work/build/bin/python" wheel --no-deps --no-build-isolation \
    --wheel-dir "$work/wheels" "${3:-.}"
  "$python" -m pip --python "$venv/bin/python" install --no-deps --no-index "$work"/wheels/emailtoken_operator-*.whl
  rm -rf "$work"
  ;;
*)
  echo "usage: $0 deps|app VENV [SRC]" >&2
  exit 2
  ;;
esac
