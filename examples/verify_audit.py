#!/usr/bin/env python3
"""Verify a rotatord audit export (JSONL) without rotatord: Python 3, standard library only.

    AUDIT_KEY=$(vault kv get -field=key secret/rotatord/audit-key) \
        python3 verify_audit.py audit.jsonl [-expect-head SEQ:HASH] [-partial]

The key (hex or base64) comes from $AUDIT_KEY or -key-file; without one only the
hash chain is checked. Exit 0: the log holds; 1: broken (the first bad entry is
named); 2: usage. The format is docs/audit-format.md.
"""
import argparse, base64, binascii, hashlib, hmac, json, os, sys

FIELDS = ["seq", "time", "policy", "provider", "event", "trigger", "key_id", "key_name",
          "fingerprint", "old_key_id", "old_fingerprint", "rotation_id", "vault_path",
          "vault_version", "detail", "prev_hash"]
ZERO = "0" * 64


def broken(line, why):
    print(f"audit log broken at line {line}: {why}")
    sys.exit(1)


def lines(f):
    try:
        yield from f
    except UnicodeDecodeError as err:
        broken("?", f"the export is not UTF-8: {err}")


def main():
    ap = argparse.ArgumentParser(description="verify a rotatord audit export (JSONL)")
    ap.add_argument("export")
    ap.add_argument("-expect-head", "--expect-head", help="a published head SEQ:HASH the log must reach")
    ap.add_argument("-key-file", "--key-file", help="file holding the HMAC key (default: $AUDIT_KEY)")
    ap.add_argument("-partial", "--partial", action="store_true",
                    help="the export starts mid-log (made with -since)")
    a = ap.parse_args()
    try:
        text = (open(a.key_file).read() if a.key_file else os.environ.get("AUDIT_KEY", "")).strip()
    except OSError as err:
        ap.error(str(err))
    key = None
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            try:
                t = text.rstrip("=").replace("-", "+").replace("_", "/")
                key = base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
            except binascii.Error:
                ap.error("the key is neither hex nor base64")
    expect = None
    if a.expect_head:
        seq, _, h = a.expect_head.partition(":")
        if not seq.isdigit() or len(h) != 64:
            ap.error("-expect-head wants SEQ:HASH")
        expect = (int(seq), h)

    prev = None          # (seq, hash) of the last entry
    base = None          # what the first entry chains from
    vouched = False      # the start is seq 1, a checkpoint's head, or -partial
    head_seen = False
    try:
        f = open(a.export, encoding="utf-8")
    except OSError as err:
        ap.error(str(err))
    with f:
        for n, line in enumerate(lines(f), 1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                canon = json.dumps({k: e[k] for k in FIELDS}, ensure_ascii=False,
                                   separators=(",", ":")).encode()
                seq, mac = e["seq"], e["hmac"]
            except (ValueError, KeyError, TypeError) as err:
                broken(n, f"not an audit entry: {err}")
            if set(e) != set(FIELDS) | {"hmac"} or type(seq) is not int:
                broken(n, "not an audit entry: wrong fields")
            if prev is None:
                base = (seq - 1, e["prev_hash"])
                if seq == 1 and e["prev_hash"] != ZERO:
                    broken(n, "the first entry's prev_hash is not 64 zeros")
                vouched = seq == 1 or a.partial
            elif seq != prev[0] + 1:
                broken(n, f"seq {seq} follows seq {prev[0]}: entries missing, reordered or duplicated")
            elif e["prev_hash"] != prev[1]:
                broken(n, f"seq {seq}: prev_hash does not match entry {prev[0]}")
            if key is not None and not hmac.compare_digest(
                    hmac.new(key, canon, hashlib.sha256).hexdigest(), mac):
                broken(n, f"seq {seq}: hmac mismatch: the entry was edited (or the key is wrong)")
            prev = (seq, hashlib.sha256(canon).hexdigest())
            if expect and (prev == expect or (base == expect and seq == expect[0] + 1)):
                head_seen = True
            elif expect and prev[0] == expect[0]:
                broken(n, f"seq {seq} does not match the expected head: the log was rewritten")
            if e["event"] == "checkpoint":
                cp = e["detail"].split(" ")[0]
                if cp == f"{base[0]}:{base[1]}":
                    vouched = True
                if expect and cp == f"{expect[0]}:{expect[1]}":
                    head_seen = True
    if prev and not vouched:
        broken(1, f"the log starts at seq {base[0] + 1} and no checkpoint says the entries before were pruned")
    last = prev[0] if prev else 0
    if expect and not head_seen:
        if expect[0] > last:
            broken(0, f"the log ends at seq {last}, the expected head is {a.expect_head}: entries were cut")
        broken(0, f"the expected head {a.expect_head} cannot be checked against this log")
    head = f"{prev[0]}:{prev[1]}" if prev else f"0:{ZERO}"
    print(f"ok: {last - (base[0] if base else 0)} entries, head {head}"
          + ("" if key is not None else " (HMACs NOT checked: no key given)"))


if __name__ == "__main__":
    main()
