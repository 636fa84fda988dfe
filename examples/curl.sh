#!/usr/bin/env bash
# Two generations with curl: one answered as base64 (decoded to a file), one as a URL (downloaded).
#
#   EASEL_BASE_URL=http://127.0.0.1:8000/v1 EASEL_API_KEY=sk-... examples/curl.sh "a green square to the left of a purple triangle"
#
# Needs curl and python3 (for JSON and base64; no jq required).
set -euo pipefail

base="${EASEL_BASE_URL:-http://127.0.0.1:8000/v1}"
prompt="${1:-a yellow star in the top left corner on a blue background}"  # what the default model knows
auth=()
if [ -n "${EASEL_API_KEY:-}" ]; then
    auth=(-H "Authorization: Bearer ${EASEL_API_KEY}")
fi
body() {  # JSON body with the prompt safely quoted
    python3 -c 'import json, sys; print(json.dumps({"prompt": sys.argv[1], "size": sys.argv[2], "response_format": sys.argv[3]}))' "$prompt" "$1" "$2"
}

# 1. b64_json: the image comes inside the response.
curl -sS --fail-with-body "${auth[@]}" -H "Content-Type: application/json" \
    -d "$(body 512x512 b64_json)" "$base/images/generations" \
  | python3 -c 'import base64, json, sys; item = json.load(sys.stdin)["data"][0]; open("easel-b64.png", "wb").write(base64.b64decode(item["b64_json"])); print("easel-b64.png seed", item["seed"])'

# 2. url: the response names a URL, valid for the server's --url-ttl-seconds (no key needed to fetch it).
url="$(curl -sS --fail-with-body "${auth[@]}" -H "Content-Type: application/json" \
    -d "$(body 1792x1024 url)" "$base/images/generations" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["url"])')"
curl -sS --fail -o easel-url.png "$url"
echo "easel-url.png from $url"
