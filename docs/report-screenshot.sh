#!/usr/bin/env bash
# Makes docs/report.png, the README's picture of gpud report: the simulated 4-card open-air stack
# on the stock fan schedule (gpud only watching) for 30 simulated minutes, recorded as a user would,
# reported, and photographed by headless Chromium. Takes about three minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 30 simulated minutes, a tick every simulated second: 10x speed, a tick every 0.1 s, for 180 s.
timeout -s INT 182 .venv/bin/gpud run --simulate 4 --fan-backend none --sim-speed 10 --interval 0.1 \
    --listen 127.0.0.1:19877 --log-level warning --record "$work/stack.jsonl" || [ $? -eq 124 ]
.venv/bin/gpud report "$work/stack.jsonl" -o "$work/report.html"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$work/profile" \
    --window-size=1200,"${HEIGHT:-1750}" --screenshot="$work/report.png" "file://$work/report.html" 2>/dev/null
# 256 colours keep the PNG small; the page is flat colour and text.
.venv/bin/python -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[2], optimize=True)" \
    "$work/report.png" docs/report.png
cp "$work/report.html" "${KEEP_HTML:-/dev/null}"
echo "docs/report.png: $(stat -c %s docs/report.png) bytes"
