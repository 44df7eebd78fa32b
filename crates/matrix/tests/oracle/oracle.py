"""Differential-test oracle for crates/matrix/tests/python_oracle.rs.

Reads requests as JSON lines on stdin (bytes, UTF-8) and answers each with one JSON line on
stdout, in order. It uses Synapse's own libraries: `canonicaljson` for the canonical encoding
and `signedjson` for signing and verifying. Requests:

    {"id": N, "text": "<JSON text>", "sign": true|false, "ours": "<JSON text>"|null}

`text` is parsed by Python's `json` (so Python reads the same literals we did). The answer:

    {"id": N, "canon": "<base64 of encode_canonical_json(value)>",
     "signed": "<base64 of the canonical signed object>" | null,
     "verify_ours": true | "<why not>" | null, "error": "<exception>" | null}

`signed` is the value signed with sign_json(value, "domain", key) where key is the spec's
test seed as key "ed25519:1"; `verify_ours` is verify_signed_json on `ours` (the same value
as signed by the Rust side).
"""

import base64
import json
import sys

from canonicaljson import encode_canonical_json
from signedjson.key import decode_signing_key_base64, get_verify_key
from signedjson.sign import sign_json, verify_signed_json

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SIGNING_KEY = decode_signing_key_base64("ed25519", "1", SEED)
VERIFY_KEY = get_verify_key(SIGNING_KEY)


def b64(data):
    return base64.b64encode(data).decode("ascii")


def answer(req):
    out = {"id": req["id"], "canon": None, "signed": None, "verify_ours": None, "error": None}
    try:
        value = json.loads(req["text"])
        out["canon"] = b64(encode_canonical_json(value))
        if req.get("sign"):
            if not isinstance(value, dict):
                raise ValueError("sign requested for a non-object")
            sign_json(value, "domain", SIGNING_KEY)
            out["signed"] = b64(encode_canonical_json(value))
        if req.get("ours") is not None:
            try:
                verify_signed_json(json.loads(req["ours"]), "domain", VERIFY_KEY)
                out["verify_ours"] = True
            except Exception as e:  # noqa: BLE001 - reported to the Rust side
                out["verify_ours"] = "%s: %s" % (type(e).__name__, e)
    except Exception as e:  # noqa: BLE001 - reported to the Rust side
        out["error"] = "%s: %s" % (type(e).__name__, e)
    return out


def main():
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line.decode("utf-8"))
        stdout.write(json.dumps(answer(req), ensure_ascii=True).encode("ascii") + b"\n")
    stdout.flush()


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    main()
