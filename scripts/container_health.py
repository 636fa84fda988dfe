"""The container's HEALTHCHECK: exit 0 when /health/ready answers 200 (every model loaded, not draining), else 1."""

import os
import sys
import urllib.error
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('EASEL_PORT', '8000')}/health/ready"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except (OSError, urllib.error.URLError) as error:
    print(f"not ready: {error}", file=sys.stderr)
    sys.exit(1)
