#!/usr/bin/env bash
# Installs perf_analyzer into a virtualenv's bin/ as a wrapper script.
#
# PyPI's `perf-analyzer` is a placeholder with no binary; the working binary ships inside the
# tritonclient 2.51.0 wheel (later wheels need glibc 2.38). It loads libb64 (Debian's libb64-0d,
# unpacked here without root) and libcudart.so.12 (never used on a CPU machine).
# If any piece cannot be had, a wrapper that explains why is installed instead, and tests that
# need perf_analyzer skip with that reason.
set -uo pipefail
venv=${1:-.venv}
venv=$(cd "$venv" && pwd)
dest="$venv/tools/perf_analyzer"
wrapper="$venv/bin/perf_analyzer"
rm -rf "$dest"
mkdir -p "$dest/dl"
cd "$dest/dl" || exit 1

fail() {
    printf '#!/usr/bin/env bash\necho "perf_analyzer is not installed: %s" >&2\nexit 127\n' "$1" >"$wrapper"
    chmod +x "$wrapper"
    echo "warning: perf_analyzer not installed: $1" >&2
    exit 0
}

"$venv/bin/python" -m pip download --quiet --no-deps tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.9.79 -d . \
    || fail "could not download the tritonclient 2.51.0 / nvidia-cuda-runtime-cu12 wheels"
apt-get download libb64-0d >/dev/null 2>&1 || fail "could not download Debian's libb64-0d"
mkdir -p ../bin ../lib
unzip -q -o -j tritonclient-2.51.0-*.whl 'tritonclient-2.51.0.data/data/bin/perf_analyzer' -d ../bin \
    || fail "perf_analyzer binary missing from the tritonclient wheel"
unzip -q -o -j nvidia_cuda_runtime_cu12-*.whl 'nvidia/cuda_runtime/lib/libcudart.so.12' -d ../lib \
    || fail "libcudart.so.12 missing from its wheel"
dpkg -x libb64-0d_*.deb b64 && cp b64/usr/lib/*/libb64.so.0d* ../lib/ || fail "could not unpack libb64-0d"
cd .. && rm -rf dl
chmod +x bin/perf_analyzer
cat >"$wrapper" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$dest/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$dest/bin/perf_analyzer" "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" --version >/dev/null 2>&1 || fail "the binary does not run on this machine (glibc too old?)"
echo "perf_analyzer installed: $("$wrapper" --version 2>&1 | head -1)"
