#!/usr/bin/env bash
# Rebuilds the dashboard: message code from proto/ (protoc-gen-es) and the bundle in web/dist,
# which the binary embeds. Run after changing proto/ or web/src, then commit web/src/gen and
# web/dist. Needs Node.js 20+ and npm (nothing else: buf and esbuild come from npm).
set -euo pipefail
cd "$(dirname "$0")/../web"
npm ci --no-audit --no-fund
npm run build
echo "web/dist rebuilt; commit web/src/gen and web/dist"
