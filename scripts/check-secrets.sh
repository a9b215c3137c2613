#!/usr/bin/env bash
# Before `make up` starts anything: an admin_token or hmac_key given in the environment must be
# at least 32 bytes. The app keeps the routes a shorter one guards off (503 admin_weak_token,
# signing_weak_key); this says so before the first build instead.
set -euo pipefail
export LC_ALL=C # ${#value} counts bytes
status=0
for name in ADMIN_TOKEN HMAC_KEY; do
  var=SPIN_VARIABLE_$name
  value=${!var:-}
  if [[ -n $value && ${#value} -lt 32 ]]; then
    echo "$var is ${#value} bytes, fewer than 32: set a longer one, e.g. export $var=\$(openssl rand -hex 32)" >&2
    status=1
  fi
done
exit "$status"
