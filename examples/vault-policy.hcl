# Least-privilege Vault policy for rotatord.
#
# rotatord keeps each policy's private key at <mount>/<vault_path> and an
# in-flight one at <mount>/<vault_path>/pending, in a KV v2 engine. This
# policy assumes mount "secret" and vault_path values under "ssh/" (e.g.
# ssh/sesterce/gpu-team, as in policies.example.yaml); change both prefixes
# below if yours differ. It grants nothing else: no other path, no listing,
# no sys/ endpoint.
#
# What each rule serves (KV v2 splits a secret into data/ and metadata/):
#   secret/data/ssh/*      create, update: write a version (with check-and-set)
#                          read:           read the latest or an older version
#   secret/metadata/ssh/*  read:           current version number (for check-and-set)
#                          delete:         remove every version of <vault_path>/pending
#                                          once it is promoted, so no key lingers
#   secret/data/rotatord/audit-key
#                          create, read:   the HMAC key that seals the audit log, made
#                                          once (check-and-set) and read at start; no
#                                          update or delete, so it cannot be replaced
#   secret/metadata/rotatord/audit-key
#                          read:           the check-and-set of that first write
# The token's "default" policy (attached unless you disable it) covers token
# lookup and renewal, which rotatord uses to check and keep its token alive.
#
# Bind it to an AppRole (run as a Vault admin):
#
#   vault policy write rotatord examples/vault-policy.hcl
#   vault auth enable approle                      # once per Vault
#   vault write auth/approle/role/rotatord \
#       token_policies=rotatord \
#       token_ttl=1h token_max_ttl=24h \
#       secret_id_ttl=0 secret_id_num_uses=0
#   vault read -field=role_id auth/approle/role/rotatord/role-id \
#       > /etc/rotatord/vault-role-id
#   vault write -f -field=secret_id auth/approle/role/rotatord/secret-id \
#       > /etc/rotatord/vault-secret-id
#   chmod 0600 /etc/rotatord/vault-role-id /etc/rotatord/vault-secret-id
#
# and point rotatord at them:
#
#   vault:
#     auth: {method: approle, role_id_file: /etc/rotatord/vault-role-id,
#            secret_id_file: /etc/rotatord/vault-secret-id}
#
# rotatord logs in again by itself whenever its token reaches token_max_ttl.
# Consumers of the keys need only "read" on secret/data/ssh/<their path>.

path "secret/data/ssh/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/ssh/*" {
  capabilities = ["read", "delete"]
}

path "secret/data/rotatord/audit-key" {
  capabilities = ["create", "read"]
}

path "secret/metadata/rotatord/audit-key" {
  capabilities = ["read"]
}
