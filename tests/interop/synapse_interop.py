#!/usr/bin/env python3
"""Interop test driver: a real Synapse invites users of a real invited over TLS.

Run by scripts/interop-synapse.sh, which installs Synapse, builds invited, makes the test CA,
starts both servers and stops them. This file has two commands:

  setup  writes Synapse's configuration (homeserver.yaml, log config, signing key)
  run    drives the test through Synapse's client API and checks both servers' results

It uses only the standard library plus what the Synapse venv brings (signedjson, and Synapse
itself for the redaction algorithm). Everything talks to loopback addresses only.
"""

import argparse
import copy
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# Room versions the test must be able to create and have invited accept.
REQUIRED_VERSIONS = ["1", "10", "11", "12"]
# Every stable room version we try (invited supports exactly these).
STABLE_VERSIONS = [str(v) for v in range(1, 13)]

SYNAPSE_USER = "alice"
SYNAPSE_PASSWORD = "interop-password-not-secret"
# A second Synapse user, given the power to kick in the lifecycle checks' rooms.
SYNAPSE_MODERATOR = "erin"

# Room versions of the lifecycle checks (one per event ID format: v1 has event_id fields, v11
# reference hashes, v12 creators outside the power levels).
LIFECYCLE_VERSIONS = ["1", "11", "12"]
# How long a lifecycle outcome may take to show on the other server.
LIFECYCLE_WAIT_S = 30


# --------------------------------------------------------------------------------------------
# setup: Synapse's configuration


def everything_but_loopback():
    """CIDR ranges covering every IPv4 and IPv6 address except 127.0.0.0/8 and ::1."""
    v4 = list(ipaddress.ip_network("0.0.0.0/0").address_exclude(ipaddress.ip_network("127.0.0.0/8")))
    v6 = list(ipaddress.ip_network("::/0").address_exclude(ipaddress.ip_network("::1/128")))
    return [str(n) for n in sorted(v4)] + [str(n) for n in sorted(v6)]


def cmd_setup(args):
    from signedjson.key import generate_signing_key, write_signing_keys

    d = os.path.abspath(args.dir)
    os.makedirs(os.path.join(d, "media_store"), exist_ok=True)
    key_path = os.path.join(d, "signing.key")
    if not os.path.exists(key_path):
        with open(key_path, "w") as f:
            write_signing_keys(f, [generate_signing_key("a_" + secrets.token_hex(3))])
    log_config = os.path.join(d, "log.config")
    with open(log_config, "w") as f:
        # YAML is a superset of JSON: write JSON, need no YAML library.
        json.dump(
            {
                "version": 1,
                "formatters": {
                    "precise": {
                        "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                        "%(request)s - %(message)s"
                    }
                },
                "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter",
                                        "request": ""}},
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "formatter": "precise",
                        "filename": os.path.join(d, "homeserver.log"),
                        "filters": ["context"],
                        "encoding": "utf8",
                    }
                },
                "loggers": {
                    # The outgoing federation requests and their answers.
                    "synapse.http.matrixfederationclient": {"level": "DEBUG"},
                    "synapse.federation.federation_client": {"level": "DEBUG"},
                    "synapse.storage.SQL": {"level": "WARNING"},
                },
                "root": {"level": "INFO", "handlers": ["file"]},
                "disable_existing_loggers": False,
            },
            f,
            indent=1,
        )
    generous = {"per_second": 1000, "burst_count": 1000}
    config = {
        "server_name": args.server_name,
        "pid_file": os.path.join(d, "homeserver.pid"),
        "listeners": [
            {
                "port": args.federation_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["federation"], "compress": False}],
            },
            {
                "port": args.client_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            },
        ],
        "tls_certificate_path": os.path.abspath(args.tls_cert),
        "tls_private_key_path": os.path.abspath(args.tls_key),
        # Trust only the test CA for outbound federation, and check certificates.
        "federation_custom_ca_list": [os.path.abspath(args.ca)],
        "federation_verify_certificates": True,
        # Reach loopback (invited) and nothing else.
        "ip_range_blacklist": everything_but_loopback(),
        "database": {"name": "sqlite3", "args": {"database": os.path.join(d, "homeserver.db")}},
        "log_config": log_config,
        "media_store_path": os.path.join(d, "media_store"),
        "signing_key_path": key_path,
        "registration_shared_secret": args.shared_secret,
        "enable_registration": False,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        # Nothing that phones home or reaches out on its own.
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "url_preview_enabled": False,
        "enable_metrics": False,
        "presence": {"enabled": False},
        "push": {"enabled": False},
        "serve_server_wellknown": False,
        "allow_public_rooms_over_federation": False,
        "user_directory": {"enabled": False},
        # The test creates and invites faster than a human.
        "rc_message": generous,
        "rc_room_creation": generous,
        "rc_joins": {"local": generous, "remote": generous},
        "rc_joins_per_room": generous,
        "rc_invites": {"per_room": generous, "per_user": generous, "per_issuer": generous},
        "rc_login": {"address": generous, "account": generous, "failed_attempts": generous},
        "rc_registration": generous,
    }
    path = os.path.join(d, "homeserver.yaml")
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    print(path)


# --------------------------------------------------------------------------------------------
# run: the test


class Http:
    """A tiny JSON-over-HTTP client (urllib) that returns (status, body) for every status."""

    def __init__(self, ca_file):
        self.ssl = ssl.create_default_context(cafile=ca_file)
        # Loopback only: never use a proxy from the environment.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.ssl)
        )

    def call(self, method, url, body=None, token=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")


class Failed(Exception):
    pass


class Target:
    """One invited instance as seen by the test: its server name, database and keys."""

    def __init__(self, name, url, db, config, expect_api):
        self.name = name
        self.url = url
        self.db = db
        self.config = config
        self.bob = "@bob:" + name
        self.expect_api = expect_api  # which /vN/invite Synapse should end up using
        self.keys = None


def expect(cond, what):
    if not cond:
        raise Failed(what)


def q(s):
    return urllib.parse.quote(s, safe="")


class Interop:
    def __init__(self, a):
        self.a = a
        self.http = Http(a.ca)
        self.syn = a.synapse_client_url.rstrip("/")
        self.main = Target(a.invited_name, a.invited_url.rstrip("/"), a.invited_db,
                           a.invited_config, 2)
        self.v1 = None
        if a.v1_invited_name:
            self.v1 = Target(a.v1_invited_name, "https://" + a.v1_invited_name,
                             a.v1_invited_db, a.v1_invited_config, 1)
        self.token = None
        self.user_id = None
        self.results = []  # (ok, name, detail)
        self.details = {}  # for the JSON report

    # -- helpers ------------------------------------------------------------------------------

    def record(self, ok, name, detail):
        self.results.append((ok, name, detail))
        print(("PASS " if ok else "FAIL ") + name + ": " + detail, flush=True)

    def client(self, method, path, body=None, token=None):
        return self.http.call(method, self.syn + path, body, token or self.token)

    def invited_db(self, target=None):
        # Read-only; invited runs in WAL mode, so reading never blocks it.
        db = (target or self.main).db
        uri = "file:" + urllib.parse.quote(os.path.abspath(db)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def invited_cli(self, *argv):
        cmd = [self.a.invited_bin, "--config", self.main.config, *argv]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise Failed(f"`{' '.join(argv)}` exited {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    # -- setup --------------------------------------------------------------------------------

    def register(self):
        """Registers the inviting user through the shared-secret admin API."""
        self.token, self.user_id = self.register_user(SYNAPSE_USER, admin=True)

    def register_user(self, username, admin):
        """Registers a Synapse user (shared-secret admin API): (access token, user ID)."""
        status, body = self.client("GET", "/_synapse/admin/v1/register")
        expect(status == 200 and "nonce" in body, f"register nonce: {status} {body}")
        nonce = body["nonce"]
        kind = "admin" if admin else "notadmin"
        mac = hmac.new(self.a.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join(part.encode() for part in (nonce, username, SYNAPSE_PASSWORD,
                                                            kind)))
        status, body = self.client(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": username,
                "password": SYNAPSE_PASSWORD,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        expect(status == 200 and "access_token" in body, f"register {username}: {status} {body}")
        return body["access_token"], body["user_id"]

    def server_keys(self, base, name):
        """A server's published keys, self-signature checked: {key_id: VerifyKey}."""
        from signedjson.key import decode_verify_key_bytes
        from signedjson.sign import verify_signed_json
        from unpaddedbase64 import decode_base64

        status, body = self.http.call("GET", base + "/_matrix/key/v2/server")
        expect(status == 200, f"GET {base}/_matrix/key/v2/server: {status} {body}")
        expect(body.get("server_name") == name, f"key response names {body.get('server_name')}")
        keys = {}
        for key_id, k in body.get("verify_keys", {}).items():
            keys[key_id] = decode_verify_key_bytes(key_id, decode_base64(k["key"]))
        expect(keys, f"{name} publishes no verify_keys")
        for key_id, vk in keys.items():
            verify_signed_json(body, name, vk)
        return keys

    # -- one room version ---------------------------------------------------------------------

    def create_room(self, version, name):
        return self.client(
            "POST",
            "/_matrix/client/v3/createRoom",
            {"room_version": version, "preset": "private_chat", "name": name},
        )

    def federation_event(self, room_id, event_id):
        """The event as Synapse stored it, in federation format (with signatures), read through
        the client API: /sync with a filter asking for event_format "federation"."""
        flt = {
            "event_format": "federation",
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
            "room": {
                "rooms": [room_id],
                "timeline": {"limit": 100},
                "state": {"types": []},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
        }
        path = "/_matrix/client/v3/sync?timeout=0&filter=" + q(json.dumps(flt))
        status, body = self.client("GET", path)
        expect(status == 200, f"/sync: {status} {body}")
        timeline = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
        for ev in timeline.get("events", []):
            if ev.get("event_id") == event_id:
                return ev, "client API /sync (event_format federation)"
        # Fall back to Synapse's own table (the same JSON, without client-side additions).
        conn = sqlite3.connect(
            "file:" + urllib.parse.quote(os.path.abspath(self.a.synapse_db)) + "?mode=ro",
            uri=True,
            timeout=10,
        )
        row = conn.execute("SELECT json FROM event_json WHERE event_id = ?", (event_id,)).fetchone()
        conn.close()
        expect(row is not None, f"Synapse has no event {event_id}")
        return json.loads(row[0]), "Synapse's event_json table"

    def check_signature(self, version, event, server, keys, room_version_obj):
        """Checks `server`'s signature on the event as Synapse does: over the redacted event
        of the room version (Synapse's own redaction code), without signatures/unsigned."""
        from signedjson.sign import SignatureVerifyException, verify_signed_json

        ev = copy.deepcopy(event)
        ev.pop("unsigned", None)
        if version not in ("1", "2"):
            # Room versions 3+ have no event_id in the PDU; Synapse adds it when serialising.
            ev.pop("event_id", None)
        redacted = redact(room_version_obj, ev)
        sigs = redacted.get("signatures", {}).get(server, {})
        expect(sigs, f"the event Synapse stored has no signature of {server}: "
                     f"signatures={json.dumps(event.get('signatures'))}")
        checked = []
        for key_id in sigs:
            expect(key_id in keys, f"{server} signed with {key_id}, which it does not publish")
            verify_signed_json(redacted, server, keys[key_id])
            checked.append(key_id)
            # Negative control: the same check fails on a changed event, so it checks something.
            tampered = copy.deepcopy(redacted)
            tampered["origin_server_ts"] = tampered["origin_server_ts"] + 1
            try:
                verify_signed_json(tampered, server, keys[key_id])
            except SignatureVerifyException:
                pass
            else:
                raise Failed(f"{server}'s signature also verified on a changed event")
        return checked

    def one_version(self, version, t, synapse_keys, label=None):
        """Synapse invites t.bob into a new room of this version; checks both servers."""
        from synapse.api.room_versions import KNOWN_ROOM_VERSIONS

        info = {"room_version": version, "invited": t.name}
        self.details[label or version] = info
        status, body = self.create_room(version, f"interop room v{version}")
        expect(status == 200, f"Synapse cannot create a room of version {version}: {status} {body}")
        room_id = body["room_id"]
        info["room_id"] = room_id

        t0 = time.monotonic()
        status, body = self.client(
            "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": t.bob}
        )
        info["invite_ms"] = int((time.monotonic() - t0) * 1000)
        expect(status == 200, f"invite: Synapse client API answered {status} {json.dumps(body)}")
        expect(body == {}, f"invite: Synapse answered 200 with {json.dumps(body)}")

        # What invited stored.
        conn = self.invited_db(t)
        rows = conn.execute(
            "SELECT event_id, room_version, invitee, sender, origin, state, api_version, "
            "signed_event FROM invites WHERE room_id = ?",
            (room_id,),
        ).fetchall()
        expect(len(rows) == 1, f"invited stored {len(rows)} invites for {room_id}")
        row = rows[0]
        expect(row["room_version"] == version, f"invited stored room version {row['room_version']}")
        expect(row["state"] == "pending", f"invited stored state {row['state']}")
        expect(row["invitee"] == t.bob, f"invited stored invitee {row['invitee']}")
        expect(row["sender"] == self.user_id, f"invited stored sender {row['sender']}")
        expect(row["origin"] == self.a.synapse_name, f"invited stored origin {row['origin']}")
        info["api_version"] = row["api_version"]
        expect(row["api_version"] == t.expect_api,
               f"the invite came through /v{row['api_version']}/invite, "
               f"expected /v{t.expect_api}/invite")
        pending = conn.execute(
            "SELECT invite_state FROM pending_invites WHERE event_id = ?", (row["event_id"],)
        ).fetchone()
        warnings = [
            w[0]
            for w in conn.execute(
                "SELECT warning FROM invite_warnings WHERE event_id = ?", (row["event_id"],)
            )
        ]
        conn.close()
        expect(pending is not None, "the invite is not in pending_invites")
        state = json.loads(pending["invite_state"])
        creates = [s for s in state if s.get("type") == "m.room.create"]
        expect(len(creates) == 1, f"pending_invites.invite_state has {len(creates)} create events")
        expect(
            creates[0].get("content", {}).get("room_version", "1") == version,
            f"create event in invite_state says room version "
            f"{creates[0].get('content', {}).get('room_version')}",
        )
        if version == "12":
            expect("signatures" in creates[0], "v12: invite_state's create event is not a full PDU")
        expect(not warnings, f"invited stored warnings: {warnings}")
        info["invite_state_types"] = sorted(s.get("type") for s in state)

        # What Synapse stored: the invite is the room's current m.room.member state for bob.
        status, body = self.client(
            "GET",
            f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(t.bob)}?format=event",
        )
        expect(status == 200, f"member state: {status} {body}")
        expect(body.get("content", {}).get("membership") == "invite",
               f"bob's membership in Synapse is {body.get('content')}")
        event_id = body["event_id"]
        expect(event_id == row["event_id"],
               f"Synapse's invite {event_id} is not the one invited stored ({row['event_id']})")
        info["event_id"] = event_id

        event, info["event_source"] = self.federation_event(room_id, event_id)
        rv = KNOWN_ROOM_VERSIONS[version]
        info["invited_key_ids"] = self.check_signature(
            version, event, t.name, t.keys, rv
        )
        # Sanity of the check itself: Synapse's own signature verifies the same way.
        self.check_signature(version, event, self.a.synapse_name, synapse_keys, rv)
        # The signature Synapse kept is the one invited answered with.
        ours = json.loads(row["signed_event"])["signatures"][t.name]
        theirs = event["signatures"][t.name]
        expect(ours == theirs, f"signature differs: invited answered {ours}, Synapse kept {theirs}")
        # And the whole event: what invited answered is what Synapse stored (unsigned aside).
        def comparable(ev):
            ev = {k: v for k, v in ev.items() if k != "unsigned"}
            if version not in ("1", "2"):
                ev.pop("event_id", None)
            return json.dumps(ev, sort_keys=True)
        expect(comparable(json.loads(row["signed_event"])) == comparable(event),
               "the event Synapse stored differs from the one invited answered with")
        return (
            f"invite 200 in {info['invite_ms']} ms via /v{row['api_version']}/invite; "
            f"invited stored room_version={version} state=pending; "
            f"Synapse's event {event_id} carries invited's signature "
            f"({','.join(info['invited_key_ids'])}), verified"
        )

    # -- refusals -----------------------------------------------------------------------------

    def refusal(self, name, room_version, setup, teardown, want_status, want_errcode,
                want_error, invitee=None):
        """Makes invited refuse, invites through Synapse, and checks what the client gets."""
        invitee = invitee or self.main.bob
        try:
            if setup:
                setup()
            status, body = self.create_room(room_version, f"interop refusal {name}")
            expect(status == 200, f"createRoom {room_version}: {status} {body}")
            room_id = body["room_id"]
            since = int(time.time() * 1000) - 1000
            status, body = self.client(
                "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": invitee}
            )
            self.details[name] = {"status": status, "body": body, "room_id": room_id}
            got = (status, body.get("errcode") if isinstance(body, dict) else None)
            expect(got == (want_status, want_errcode),
                   f"Synapse client got {status} {json.dumps(body)}; "
                   f"want {want_status} {want_errcode}")
            expect(body.get("error") == want_error,
                   f"error message {body.get('error')!r}, want {want_error!r}")
            # invited's writer thread logs refusals after answering (no waiter; see
            # src/writer.rs), so the row may land a moment after Synapse got the error.
            deadline = time.monotonic() + 5
            while True:
                conn = self.invited_db()
                stored = conn.execute("SELECT count(*) FROM invites WHERE room_id = ?",
                                      (room_id,)).fetchone()[0]
                refusals = conn.execute(
                    "SELECT rule, errcode, status FROM refusals WHERE room_id = ? AND ts >= ?",
                    (room_id, since),
                ).fetchall()
                conn.close()
                if refusals or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            expect(stored == 0, f"invited stored {stored} invites for the refused room")
            expect(len(refusals) == 1, f"invited logged {len(refusals)} refusals for the room")
            expect(refusals[0]["errcode"] == want_errcode,
                   f"invited logged errcode {refusals[0]['errcode']}")
            status_b, mem = self.client(
                "GET",
                f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(invitee)}",
            )
            expect(status_b == 404, f"Synapse has a member event for {invitee} anyway: {mem}")
            self.record(True, f"refusal {name}",
                        f"Synapse client got {status} {json.dumps(body, sort_keys=True)}; "
                        f"invited logged rule {refusals[0]['rule']!r}, stored nothing")
        except Failed as e:
            self.record(False, f"refusal {name}", str(e))
        except Exception as e:  # noqa: BLE001 - any crash is a failed check, keep going
            self.record(False, f"refusal {name}", f"{type(e).__name__}: {e}")
        finally:
            if teardown:
                try:
                    teardown()
                except Exception as e:  # noqa: BLE001
                    self.record(False, f"refusal {name} teardown", str(e))

    # -- the rest of an invite's life ---------------------------------------------------------

    def invited_show(self, event_id):
        """`invited invites show EVENT_ID --json`, parsed."""
        return json.loads(self.invited_cli("invites", "show", event_id, "--json"))

    def member_event(self, room_id, user_id):
        """The user's current m.room.member event in Synapse's room state, as the inviter
        sees it (client API), or None when there is none."""
        status, body = self.client(
            "GET",
            f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}"
            "?format=event",
        )
        if status == 404:
            return None
        expect(status == 200, f"member state of {user_id}: {status} {body}")
        return body

    def wait_until(self, what, check, secs=LIFECYCLE_WAIT_S):
        """Calls check() until it returns something true; fails with `what` after secs."""
        deadline = time.monotonic() + secs
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise Failed(f"{what} (waited {secs} s)")
            time.sleep(0.2)

    def lifecycle_room(self, version, purpose):
        status, body = self.create_room(version, f"interop {purpose} v{version}")
        expect(status == 200, f"createRoom {version}: {status} {body}")
        return body["room_id"]

    def invite_held(self, room_id, invitee, version):
        """Synapse's user invites `invitee` of invited; returns the invite's event ID once
        invited holds it as pending."""
        status, body = self.client(
            "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": invitee}
        )
        expect(status == 200, f"invite {invitee}: Synapse client API answered {status} {body}")

        def held():
            conn = self.invited_db()
            rows = conn.execute(
                "SELECT event_id, state, room_version FROM invites "
                "WHERE room_id = ? AND invitee = ?",
                (room_id, invitee),
            ).fetchall()
            conn.close()
            return rows

        rows = self.wait_until(f"invited never stored the invite of {invitee}", held)
        expect(len(rows) == 1, f"invited stored {len(rows)} invites of {invitee}")
        expect(rows[0]["state"] == "pending", f"invited stored state {rows[0]['state']}")
        expect(rows[0]["room_version"] == version,
               f"invited stored room version {rows[0]['room_version']}")
        mine = self.member_event(room_id, invitee)
        expect(mine is not None and mine.get("content", {}).get("membership") == "invite",
               f"{invitee}'s membership in Synapse is {mine and mine.get('content')}")
        expect(mine["event_id"] == rows[0]["event_id"],
               f"Synapse's invite {mine['event_id']} is not the one invited stored "
               f"({rows[0]['event_id']})")
        return rows[0]["event_id"]

    def invited_log_size(self):
        try:
            return os.path.getsize(self.a.invited_log)
        except OSError:
            return 0

    def invited_log_since(self, offset):
        """invited's complete log lines written after byte `offset` (a line still being
        written is left for the next look)."""
        with open(self.a.invited_log, "rb") as f:
            f.seek(offset)
            text = f.read()
        return text[: text.rfind(b"\n") + 1].decode("utf-8", "replace").splitlines()

    def lifecycle_reject(self, version):
        """invited rejects an invite over federation (make_leave + send_leave to Synapse)."""
        invitee = f"@bob.reject.v{version}:{self.main.name}"
        reason = f"interop rejection v{version}"
        room_id = self.lifecycle_room(version, "reject")
        event_id = self.invite_held(room_id, invitee, version)
        t0 = time.monotonic()
        self.invited_cli("invites", "reject", event_id, "--reason", reason, "--wait",
                         str(LIFECYCLE_WAIT_S))
        cli_ms = int((time.monotonic() - t0) * 1000)

        def left():
            ev = self.member_event(room_id, invitee)
            if ev and ev.get("content", {}).get("membership") == "leave":
                return ev
            return None

        leave = self.wait_until(f"Synapse never showed {invitee} as left", left)
        shown = self.invited_show(event_id)
        rejection = shown.get("rejection") or {}
        self.details[f"lifecycle v{version} reject"] = {
            "room_id": room_id, "invite": event_id, "synapse_leave": leave, "invited": shown}
        expect(shown.get("state") == "rejected", f"invited shows state {shown.get('state')}")
        expect(rejection.get("accepted_by") == self.a.synapse_name,
               f"invited's rejection was accepted by {rejection.get('accepted_by')!r}, "
               f"not {self.a.synapse_name}")
        expect(leave.get("sender") == invitee, f"Synapse's leave was sent by {leave.get('sender')}")
        expect(leave["event_id"] == rejection.get("leave_event_id"),
               f"Synapse's leave {leave['event_id']} is not the one invited sent "
               f"({rejection.get('leave_event_id')})")
        expect(leave.get("content", {}).get("reason") == reason,
               f"Synapse's leave has content {leave.get('content')}")
        # Synapse stored our leave as we signed it: invited's signature verifies on it.
        from synapse.api.room_versions import KNOWN_ROOM_VERSIONS

        event, _ = self.federation_event(room_id, leave["event_id"])
        key_ids = self.check_signature(version, event, self.main.name, self.main.keys,
                                       KNOWN_ROOM_VERSIONS[version])
        return (f"`invites reject --wait` exited 0 after {cli_ms} ms "
                f"({rejection.get('attempts')} attempt(s)); Synapse shows {invitee} left by "
                f"invited's leave {leave['event_id']} with our reason, signed by invited "
                f"({','.join(key_ids)}), verified; invited: rejected, accepted by "
                f"{rejection['accepted_by']}")

    def lifecycle_rescind(self, version):
        """The inviter kicks the invitee before they answer: invited marks it rescinded."""
        invitee = f"@carol.rescind.v{version}:{self.main.name}"
        room_id = self.lifecycle_room(version, "rescind")
        event_id = self.invite_held(room_id, invitee, version)
        status, body = self.client("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/kick",
                                   {"user_id": invitee, "reason": "withdrawn"})
        expect(status == 200, f"kick {invitee}: {status} {body}")
        kick = self.member_event(room_id, invitee)
        expect(kick is not None and kick.get("content", {}).get("membership") == "leave",
               f"after the kick, {invitee}'s membership in Synapse is {kick}")
        expect(kick.get("sender") == self.user_id, f"the kick was sent by {kick.get('sender')}")
        t0 = time.monotonic()

        def rescinded():
            shown = self.invited_show(event_id)
            return shown if shown.get("state") == "rescinded" else None

        try:
            shown = self.wait_until(f"invited never marked {event_id} rescinded", rescinded)
        except Failed as e:
            raise Failed(f"{e}; it shows {self.invited_show(event_id).get('state')}") from None
        waited_ms = int((time.monotonic() - t0) * 1000)
        rescind = shown.get("rescind") or {}
        self.details[f"lifecycle v{version} rescind"] = {
            "room_id": room_id, "invite": event_id, "synapse_kick": kick, "invited": shown}
        expect(rescind.get("event_id") == kick["event_id"],
               f"invited's rescind names {rescind.get('event_id')!r}, Synapse's kick is "
               f"{kick['event_id']}")
        expect(rescind.get("origin") == self.a.synapse_name,
               f"the rescind came from {rescind.get('origin')!r}")
        return (f"{self.user_id} kicked {invitee}; invited: rescinded by {kick['event_id']} "
                f"(from {rescind['origin']}) {waited_ms} ms after the kick")

    def lifecycle_kick_by_other(self, version, moderator_token, moderator):
        """Another member with the power to kick removes the invitee: invited refuses to take
        it as a withdrawal (only the inviter's own counts) and keeps the invite pending."""
        invitee = f"@dave.kicked.v{version}:{self.main.name}"
        room_id = self.lifecycle_room(version, "kick by another member")
        base = f"/_matrix/client/v3/rooms/{q(room_id)}"
        status, levels = self.client("GET", base + "/state/m.room.power_levels/")
        expect(status == 200, f"power levels: {status} {levels}")
        levels.setdefault("users", {})[moderator] = 100
        status, body = self.client("PUT", base + "/state/m.room.power_levels/", levels)
        expect(status == 200, f"raising {moderator}'s power level: {status} {body}")
        status, body = self.client("POST", base + "/invite", {"user_id": moderator})
        expect(status == 200, f"invite {moderator}: {status} {body}")
        status, body = self.client("POST", base + "/join", {}, token=moderator_token)
        expect(status == 200, f"{moderator} joins: {status} {body}")
        event_id = self.invite_held(room_id, invitee, version)

        offset = self.invited_log_size()
        status, body = self.client("POST", base + "/kick",
                                   {"user_id": invitee, "reason": "not the inviter"},
                                   token=moderator_token)
        expect(status == 200, f"{moderator} kicks {invitee}: {status} {body}")
        kick = self.member_event(room_id, invitee)
        expect(kick is not None and kick.get("content", {}).get("membership") == "leave",
               f"after the kick, {invitee}'s membership in Synapse is {kick}")
        expect(kick.get("sender") == moderator, f"the kick was sent by {kick.get('sender')}")
        kick_id = kick["event_id"]

        # Wait for the transaction carrying the kick: invited logs its verdict on the PDU,
        # then the request line of the answered PUT /send.
        def answered():
            lines = self.invited_log_since(offset)
            verdict = next((i for i, line in enumerate(lines)
                            if f"{kick_id} does not withdraw {event_id}" in line), None)
            if verdict is None:
                return None
            done = next((line for line in lines[verdict + 1:]
                         if "PUT /_matrix/federation/v1/send/" in line), None)
            return (lines[verdict], done) if done else None

        t0 = time.monotonic()
        try:
            verdict, request = self.wait_until(
                f"invited never logged receiving Synapse's kick {kick_id}", answered)
        except Failed as e:
            sends = [line for line in self.invited_log_since(offset)
                     if "/_matrix/federation/v1/send/" in line]
            raise Failed(f"{e}; /send lines since the kick: {sends}") from None
        waited_ms = int((time.monotonic() - t0) * 1000)
        shown = self.invited_show(event_id)
        self.details[f"lifecycle v{version} kick by another member"] = {
            "room_id": room_id, "invite": event_id, "synapse_kick": kick, "invited": shown,
            "invited_log": [verdict, request]}
        expect(f"origin={self.a.synapse_name} 200 " in request,
               f"invited did not answer the transaction 200: {request}")
        expect("only the inviter" in verdict, f"invited refused the kick for another reason: "
                                              f"{verdict}")
        expect(shown.get("state") == "pending",
               f"invited shows state {shown.get('state')} after {moderator}'s kick")
        expect("rescind" not in shown, f"invited recorded a rescind: {shown.get('rescind')}")
        why = verdict.split(f"{kick_id} does not withdraw {event_id}: ", 1)[-1]
        return (f"{moderator} (power 100) kicked {invitee}; invited got the transaction "
                f"{waited_ms} ms later, refused the kick ({why}) and keeps the invite pending")

    def lifecycle(self):
        """Reject, rescind by the inviter and kick by another member, per room version."""
        try:
            moderator_token, moderator = self.register_user(SYNAPSE_MODERATOR, admin=False)
        except Exception as e:  # noqa: BLE001
            self.record(False, "lifecycle setup", f"{type(e).__name__}: {e}")
            return
        for version in LIFECYCLE_VERSIONS:
            checks = [
                ("reject over federation", lambda: self.lifecycle_reject(version)),
                ("rescind by the inviter", lambda: self.lifecycle_rescind(version)),
                ("kick by another member",
                 lambda: self.lifecycle_kick_by_other(version, moderator_token, moderator)),
            ]
            for what, check in checks:
                name = f"lifecycle v{version}: {what}"
                try:
                    self.record(True, name, check())
                except Failed as e:
                    self.record(False, name, str(e))
                except Exception as e:  # noqa: BLE001 - any crash is a failed check, keep going
                    self.record(False, name, f"{type(e).__name__}: {e}")

    # -- all ----------------------------------------------------------------------------------

    def run(self):
        from synapse.api.room_versions import KNOWN_ROOM_VERSIONS

        try:
            self.register()
            self.main.keys = self.server_keys(self.main.url, self.main.name)
            synapse_keys = self.server_keys(self.a.synapse_federation_url.rstrip("/"),
                                            self.a.synapse_name)
        except Exception as e:  # noqa: BLE001
            self.record(False, "setup", f"{type(e).__name__}: {e}")
            return self.summary()

        for version in STABLE_VERSIONS:
            name = f"room version {version}"
            if version not in KNOWN_ROOM_VERSIONS and version not in REQUIRED_VERSIONS:
                print(f"SKIP {name}: this Synapse does not know it", flush=True)
                continue
            try:
                self.record(True, name, self.one_version(version, self.main, synapse_keys))
            except Failed as e:
                self.record(False, name, str(e))
            except Exception as e:  # noqa: BLE001
                self.record(False, name, f"{type(e).__name__}: {e}")

        # A room version invited does not support (Synapse's unstable versions): invited
        # answers 400 M_INCOMPATIBLE_ROOM_VERSION, which Synapse passes through.
        unstable = sorted(v for v in KNOWN_ROOM_VERSIONS if v not in STABLE_VERSIONS)
        if unstable:
            v = unstable[0]
            self.refusal(
                f"unsupported room version {v}",
                v,
                None,
                None,
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"This server does not support room version {v}",
            )

        # An operator rule: deny the inviting server. invited answers 403 M_FORBIDDEN.
        host = self.a.synapse_name.rsplit(":", 1)[0]
        self.refusal(
            f"policy deny-server {host}",
            "12",
            lambda: self.invited_cli("policy", "deny-server", host),
            lambda: self.invited_cli("policy", "remove", host),
            403,
            "M_FORBIDDEN",
            "This server does not accept invites from you",
        )
        # The same rule for a room version 1 room (Synapse must not fall back to /v1 on 403).
        self.refusal(
            f"policy deny-server {host} (room version 1)",
            "1",
            lambda: self.invited_cli("policy", "deny-server", host),
            lambda: self.invited_cli("policy", "remove", host),
            403,
            "M_FORBIDDEN",
            "This server does not accept invites from you",
        )
        # The invitee's own setting (spec v1.18): invited answers 403 M_INVITE_BLOCKED.
        carol = "@carol:" + self.main.name
        self.refusal(
            "invitee blocks invites (M_INVITE_BLOCKED)",
            "12",
            lambda: self.invited_cli("users", "set-config", carol, "invite-permission-config",
                                     '{"default_action":"block"}'),
            None,
            403,
            "M_INVITE_BLOCKED",
            "The invited user does not accept invites from you",
            invitee=carol,
        )

        # Synapse's fallback to /v1/invite: a second invited behind a proxy that answers
        # 404 M_UNRECOGNIZED for /v2/invite (as a server without v2 would), forwarding all else.
        if self.v1:
            proxy = V2HidingProxy(self.a.v1_proxy_port, self.a.v1_upstream_port,
                                  self.a.v1_proxy_cert, self.a.v1_proxy_key, self.a.ca)
            try:
                self.v1.keys = self.server_keys(self.v1.url, self.v1.name)
                for version in ("1", "2"):
                    name = f"room version {version} via /v1/invite fallback"
                    before = len(proxy.hidden)
                    try:
                        detail = self.one_version(version, self.v1, synapse_keys, f"{version} v1")
                        expect(len(proxy.hidden) > before,
                               "Synapse never tried /v2/invite before falling back")
                        self.record(True, name, detail + "; Synapse tried /v2 first (404)")
                    except Exception as e:  # noqa: BLE001
                        self.record(False, name, f"{type(e).__name__}: {e}")
            finally:
                proxy.stop()

        # After the refusals, invites work again (rules removed; nothing stuck in backoff).
        try:
            self.record(True, "room version 12 after refusals",
                        self.one_version("12", self.main, synapse_keys, "12 after refusals"))
        except Exception as e:  # noqa: BLE001
            self.record(False, "room version 12 after refusals", f"{type(e).__name__}: {e}")

        # The rest of an invite's life: invited rejects; Synapse's inviter withdraws; another
        # member's kick is refused.
        self.lifecycle()
        return self.summary()

    def summary(self):
        if self.a.report:
            with open(self.a.report, "w") as f:
                json.dump({"results": [{"ok": ok, "name": n, "detail": d}
                                       for ok, n, d in self.results],
                           "details": self.details}, f, indent=1, sort_keys=True)
        passed = sum(1 for ok, _, _ in self.results if ok)
        failed = len(self.results) - passed
        return passed, failed


class V2HidingProxy:
    """A TLS reverse proxy on loopback in front of an invited: answers PUT /v2/invite with
    404 M_UNRECOGNIZED, so Synapse falls back to /v1/invite, and forwards every other request
    byte for byte (path still percent-encoded, headers including Authorization), so X-Matrix
    signatures still verify upstream."""

    def __init__(self, port, upstream_port, cert, key, ca):
        import http.client
        import http.server
        import threading

        self.hidden = []
        upstream_ctx = ssl.create_default_context(cafile=ca)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def answer(self, status, headers, body):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "PUT" and self.path.startswith("/_matrix/federation/v2/invite/"):
                    proxy.hidden.append(self.path)
                    self.answer(404, [("Content-Type", "application/json")],
                                b'{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}')
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "transfer-encoding")}
                conn = http.client.HTTPSConnection("127.0.0.1", upstream_port,
                                                   context=upstream_ctx, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    keep = [(k, v) for k, v in resp.getheaders()
                            if k.lower() in ("content-type", "retry-after")]
                    self.answer(resp.status, keep, data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True,
                                             do_handshake_on_connect=False)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def redact(room_version, event):
    """The room version's redaction algorithm, from the installed Synapse."""
    try:
        from synapse.synapse_rust.events import redact_event_dict  # redaction in Rust
    except ImportError:  # older Synapse: the Python version
        from synapse.events.utils import prune_event_dict as redact_event_dict
    return redact_event_dict(room_version, event)


def cmd_run(args):
    passed, failed = Interop(args).run()
    # The summary line the CI runner reads; the shell script prints it last.
    with open(args.counts, "w") if args.counts else open(os.devnull, "w") as f:
        f.write(f"{passed} {failed}\n")
    return 0 if failed == 0 and passed > 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="write Synapse's configuration")
    s.add_argument("--dir", required=True)
    s.add_argument("--server-name", required=True)
    s.add_argument("--federation-port", type=int, required=True)
    s.add_argument("--client-port", type=int, required=True)
    s.add_argument("--tls-cert", required=True)
    s.add_argument("--tls-key", required=True)
    s.add_argument("--ca", required=True)
    s.add_argument("--shared-secret", required=True)
    r = sub.add_parser("run", help="run the test against running servers")
    r.add_argument("--synapse-client-url", required=True)
    r.add_argument("--synapse-federation-url", required=True)
    r.add_argument("--synapse-name", required=True)
    r.add_argument("--synapse-db", required=True)
    r.add_argument("--shared-secret", required=True)
    r.add_argument("--invited-url", required=True)
    r.add_argument("--invited-name", required=True)
    r.add_argument("--invited-db", required=True)
    r.add_argument("--invited-bin", required=True)
    r.add_argument("--invited-config", required=True)
    r.add_argument("--invited-log", required=True, help="invited's log (RUST_LOG=debug)")
    r.add_argument("--ca", required=True)
    r.add_argument("--v1-invited-name", help="a second invited, reached through the proxy")
    r.add_argument("--v1-invited-db")
    r.add_argument("--v1-invited-config")
    r.add_argument("--v1-proxy-port", type=int, help="the proxy listens here (TLS)")
    r.add_argument("--v1-upstream-port", type=int, help="the second invited listens here")
    r.add_argument("--v1-proxy-cert")
    r.add_argument("--v1-proxy-key")
    r.add_argument("--report", help="write a JSON report here")
    r.add_argument("--counts", help="write 'passed failed' here")
    args = p.parse_args()
    if args.cmd == "setup":
        cmd_setup(args)
        return 0
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
