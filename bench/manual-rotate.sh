#!/usr/bin/env bash
# The way people rotate GPU-cloud SSH keys by hand today, for comparison
# with rotatord: a loop over ssh-keygen, the vault CLI and curl. It does the
# same work as one rotatord rotation per policy: generate, store the private
# key in Vault, upload, and on Sesterce make the key default and list to
# check that it is.
#
# Environment: FAKE_URL SESTERCE_KEYS (the even policies' accounts' API
# keys, space-separated) GCORE_KEY PROJECT VAULT (the vault binary)
# VAULT_ADDR VAULT_TOKEN N PREFIX
set -euo pipefail
read -ra sesterce_keys <<<"$SESTERCE_KEYS"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((i = 0; i < N; i++)); do
  name=$(printf 'manual%04d' "$i")
  keyname="$name-$(date -u +%Y%m%dT%H%M%S)"
  ssh-keygen -q -t ed25519 -N '' -C "manual:$name" -f "$tmp/$name"
  "$VAULT" kv put -mount=secret "$PREFIX/$name" private_key=@"$tmp/$name" public_key=@"$tmp/$name.pub" >/dev/null
  pub=$(cat "$tmp/$name.pub")
  if ((i % 2 == 0)); then
    key=${sesterce_keys[i / 2]}
    id=$(curl -fsS -X POST -H "x-api-key: $key" -H 'content-type: application/json' \
      -d "$(jq -cn --arg n "$keyname" --arg k "$pub" '{name: $n, publicKey: $k}')" \
      "$FAKE_URL/gpu-cloud/ssh-keys" | jq -r ._id)
    curl -fsS -X PATCH -H "x-api-key: $key" "$FAKE_URL/gpu-cloud/ssh-keys/$id/makedefault"
    curl -fsS -H "x-api-key: $key" "$FAKE_URL/gpu-cloud/ssh-keys" |
      jq -e --arg id "$id" '[.[] | select(.isDefault)] | length == 1 and .[0]._id == $id' >/dev/null
  else
    curl -fsS -X POST -H "Authorization: APIKey $GCORE_KEY" -H 'content-type: application/json' \
      -d "$(jq -cn --arg n "$keyname" --arg k "$pub" '{name: $n, public_key: $k}')" \
      "$FAKE_URL/cloud/v1/ssh_keys/$PROJECT" | jq -r .id >/dev/null
  fi
  rm -f "$tmp/$name" "$tmp/$name.pub"
done
