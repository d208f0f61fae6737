#!/usr/bin/env bash
# The one real CT volume Debian's packages hold: invesalius-examples' Cranium.inv3 (a head CT, GPL-2: fetched, never
# committed). Prints its path; does nothing when it is already there.
#     bash scripts/fetch_cranium.sh [DIR]   (default: $LDCT_BENCH_CACHE/real, or ~/.cache/ldct-bench/real)
set -euo pipefail
dir="${1:-${LDCT_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ldct-bench}/real}"
target="$dir/Cranium.inv3"
if [ ! -s "$target" ]; then
    mkdir -p "$dir"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download invesalius-examples >/dev/null 2>&1) || {
        echo "fetch_cranium: 'apt-get download invesalius-examples' failed (no Debian package index or network?)" >&2
        exit 1
    }
    dpkg -x "$work"/invesalius-examples_*.deb "$work/x"
    found="$(find "$work/x" -name Cranium.inv3 | head -n 1)"
    [ -n "$found" ] || { echo "fetch_cranium: the package holds no Cranium.inv3" >&2; exit 1; }
    cp "$found" "$target.tmp" && mv "$target.tmp" "$target"
fi
echo "$target"
