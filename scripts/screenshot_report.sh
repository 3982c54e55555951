#!/usr/bin/env bash
# Screenshot an evaluation report in headless Chromium, to see that it renders.
#
# Usage: scripts/screenshot_report.sh PAGE_OR_RUN_DIR [OUT.png] [WIDTHxHEIGHT]
#
#   PAGE_OR_RUN_DIR  an HTML page (report.html, compare.html) or a run folder
#                    holding summary.json; a run folder without report.html gets
#                    one written first (vigos.eval.report.write_report).
#   OUT.png          where the screenshot goes (default: <page>-screenshot.png
#                    next to the page).
#   WIDTHxHEIGHT     the browser window, default 1200x1600.
#
# When `chromium` is not on PATH, Debian's package is installed with
# `apt-get install -y chromium` (as root, or through sudo). Python is $PYTHON,
# else the repository's .venv, else python3. The screenshot is taken by
# vigos.eval.report.screenshot_html: a fresh profile, no network services.
#
# Example:
#   scripts/screenshot_report.sh runs/vigos-3b              # -> runs/vigos-3b/report-screenshot.png
#   scripts/screenshot_report.sh runs/compare/compare.html shot.png 1400x2000
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 || $1 == -h || $1 == --help ]]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi

target=$1
size=${3:-1200x1600}
if [[ ! $size =~ ^[0-9]+x[0-9]+$ ]]; then
    echo "window size must look like 1200x1600, got '$size'" >&2
    exit 2
fi

if [[ -d $target ]]; then
    page=$target/report.html
    if [[ ! -f $page ]]; then
        if [[ ! -f $target/summary.json ]]; then
            echo "$target holds neither report.html nor summary.json; give a run folder or an HTML page" >&2
            exit 1
        fi
        echo "writing the report of $target" >&2
        "$python" -c 'import sys; from vigos.eval.report import write_report; write_report(sys.argv[1])' "$target"
    fi
elif [[ -f $target ]]; then
    page=$target
else
    echo "no such page or run folder: $target" >&2
    exit 1
fi
out=${2:-${page%.html}-screenshot.png}

if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium is missing; installing Debian's chromium package" >&2
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

"$python" - "$page" "$out" "${size%x*}" "${size#*x}" <<'PY'
import sys
from vigos.eval.report import screenshot_html

page, out, width, height = sys.argv[1:5]
print(screenshot_html(page, out, width=int(width), height=int(height)))
PY
