#!/bin/sh
# Render the gateway's Envoy config for the addresses and settings in base/config.env into
# base/gateway/envoy.json (the gateway ConfigMap), with the descriptor set where the gateway's
# image holds it. Run it after changing a proto, the gateway or config.env: tests/test_deploy.py
# fails while the file is stale. CHUTES_SUITE: the chutes-suite command (default: on PATH).
set -eu
cd "$(dirname "$0")/base"
set -a
. ./config.env
set +a
exec "${CHUTES_SUITE:-chutes-suite}" gateway-config --descriptor /etc/chutes/chutes.binpb --out gateway/envoy.json
