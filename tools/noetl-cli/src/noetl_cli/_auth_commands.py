"""``noetl token create|list|revoke``, ``noetl whoami`` and ``noetl login``."""

from __future__ import annotations

import argparse
import json
import re
import sys

from ._api import Api, CliError
from ._credentials import store_token
from ._output import add_output, print_fields, show, wants_json

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ROLES = ("viewer", "operator", "developer", "admin", "worker", "publisher", "projector")


def duration_seconds(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds → seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise CliError(f"--expires-in must be a number with an optional unit s, m, h, d or w (got {text!r})")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def cmd_token_create(api: Api, args: argparse.Namespace) -> int:
    expires = duration_seconds(args.expires_in) if args.expires_in else None
    made = api.create_token(args.name, args.role, args.pool, expires)
    pool = f" pool {made['pool']}" if made.get("pool") else ""
    expiry = made.get("expires_at") or "never"
    print(f"token {made['name']}: role {made['role']}{pool}, expires {expiry}", file=sys.stderr)
    print("shown once: store it now (the API keeps only its hash)", file=sys.stderr)
    print(made["token"])  # alone on the last line of stdout, for $(noetl token create ...)
    return 0


def cmd_token_list(api: Api, args: argparse.Namespace) -> int:
    tokens = api.tokens(args.all)
    header = ["NAME", "ROLE", "POOL", "SOURCE", "EXPIRES_AT", "LAST_USED_AT", "REVOKED_AT"]
    rows = [
        [str(t.get(k) or "-") for k in ("name", "role", "pool", "source", "expires_at", "last_used_at", "revoked_at")]
        for t in tokens
    ]
    show(args, tokens, header, rows)
    return 0


def cmd_token_revoke(api: Api, args: argparse.Namespace) -> int:
    api.revoke_token(args.name)
    print(f"revoked {args.name}")
    return 0


def cmd_whoami(api: Api, args: argparse.Namespace) -> int:
    who = api.whoami()
    if wants_json(args):
        print(json.dumps(who, indent=2))
    else:
        print_fields(who)
    return 0


def cmd_login(api: Api, args: argparse.Namespace) -> int:
    """Check a token against the server, then store it for that server."""
    token = sys.stdin.readline().strip() if args.token == "-" else args.token
    with Api(api.server, token=token) as checked:
        who = checked.whoami()
    path = store_token(api.server, token)
    print(f"logged in to {api.server} as {who.get('name')} ({who.get('role')}); token stored in {path}")
    return 0


def add_auth_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token``, ``whoami`` and ``login`` to the CLI's sub-commands."""
    token = sub.add_parser("token", help="API tokens (admin)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="mint a token; it is printed once, alone on the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--pool", choices=("shared", "python", "system"), help="the pool of a worker token")
    create.add_argument("--expires-in", help="lifetime, e.g. 30d, 12h, 3600 (default: never)")
    create.set_defaults(func=cmd_token_create)
    listing = token_sub.add_parser("list", help="token metadata (never a token)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    add_output(listing)
    listing.set_defaults(func=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(func=cmd_token_revoke)

    whoami = sub.add_parser("whoami", help="the name and role the server sees for this CLI's token")
    add_output(whoami, default="json")
    whoami.set_defaults(func=cmd_whoami)
    login = sub.add_parser("login", help="check a token and store it for --server (mode 0600)")
    login.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    login.set_defaults(func=cmd_login)
