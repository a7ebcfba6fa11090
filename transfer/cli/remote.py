"""Commands that talk to a registry directly: ``ls-remote``, ``login``, ``logout``.

Also the registry options shared with export/import (``registry_options()``) and how they become
a ``transfer.options.RegistryAccess`` (``registry_access``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from transfer.cli import printable
from transfer.errors import UsageError
from transfer.reference import RegistryPath

if TYPE_CHECKING:  # imported where used: the commands' --help loads no registry client or pydantic
    from transfer.options import RegistryAccess
    from transfer.registry import Credentials

CREDENTIALS_HELP = """\
credentials, first match wins:
  --username NAME --password-stdin     explicit (the password is read from standard input)
  TRANSFER_USERNAME, TRANSFER_PASSWORD environment (for registries named on the command line)
  --auth-file FILE, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
  $DOCKER_CONFIG/config.json (~/.docker/config.json): what 'transfer login', 'docker login' or
  'podman login' saved, including credential helpers (credHelpers, credsStore)
  otherwise anonymous

trust: HTTPS with the system CAs, plus --ca-cert FILE and /etc/docker/certs.d/HOST[:PORT]/*.crt
(client.cert + client.key there for mutual TLS). Plain HTTP is tried only for localhost,
127.0.0.0/8 and ::1, for hosts in insecure-registries of /etc/docker/daemon.json, or with --insecure.
"""


def registry_options() -> argparse.ArgumentParser:
    """Parent parser: options for any command that talks to a registry."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("registry access")
    g.add_argument("--username", metavar="NAME", help="user name for the registry (with --password-stdin)")
    g.add_argument("--password-stdin", action="store_true",
                   help="read the password (or token) from standard input, e.g. `cat pw | transfer ...`")
    g.add_argument("--ca-cert", metavar="FILE", help="also trust this CA certificate (PEM) for HTTPS")
    g.add_argument("--insecure", action="store_true",
                   help="allow plain HTTP and do not verify TLS certificates (trusted networks only)")
    g.add_argument("--auth-file", "--authfile", dest="auth_file", metavar="FILE",
                   help="credentials file to read (and for login/logout to write), docker config.json format")
    return p


def read_password(args: argparse.Namespace) -> str | None:
    """The password given by --password-stdin (read once), or None."""
    if not getattr(args, "password_stdin", False):
        return None
    if getattr(args, "_password", None) is None:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: nothing was read from standard input")
        args._password = password
    return args._password


def registry_access(args: argparse.Namespace) -> RegistryAccess:
    """Credentials and trust as the registry options in ``args`` say (transfer.options.RegistryAccess)."""
    from transfer.options import RegistryAccess

    username, password = getattr(args, "username", None), read_password(args)
    if password is not None and not username:
        raise UsageError("--password-stdin needs --username")
    if username and password is None:
        raise UsageError("--username needs --password-stdin (or use 'transfer login')")
    return RegistryAccess(username=username, password=password, auth_file=getattr(args, "auth_file", None),
                          ca_cert=getattr(args, "ca_cert", None), insecure=bool(getattr(args, "insecure", False)))


def cmd_ls_remote(args: argparse.Namespace) -> int:
    import transfer.api

    listing = transfer.api.list_remote(args.location, tags=args.tags, access=registry_access(args))
    if listing.repositories is None:
        lines = listing.tags or []
    elif args.tags:
        lines = [f"{r.name}:{t}" for r in listing.repositories for t in r.tags or []]
    else:
        lines = [r.name for r in listing.repositories]
    if args.json:
        print(listing.to_json())
    elif not args.quiet and lines:
        print("\n".join(map(printable, lines)))
    return 0


def _login_credentials(args: argparse.Namespace, host: str) -> Credentials:
    from transfer.registry import Credentials

    username = args.username
    password = read_password(args)
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask for the password: use --password-stdin")
        username = username or input(f"Username for {host}: ").strip()
        import getpass  # here: it loads termios, which only a password prompt needs

        password = getpass.getpass(f"Password for {username}@{host}: ")
    if not username or not password:
        raise UsageError("login needs a user name (-u) and a password")
    return Credentials(username=username, password=password, source="login")


def cmd_login(args: argparse.Namespace) -> int:
    from transfer.registry import RegistryClient, tls_policy
    from transfer.registry.credentials import store_credentials

    target = RegistryPath.parse(args.host)
    if target.path:
        raise UsageError(f"login takes a registry host, not a repository: {args.host!r}")
    creds = _login_credentials(args, target.registry)
    tls = tls_policy(target.endpoint, ca_cert=args.ca_cert, insecure=args.insecure)
    with RegistryClient(target.endpoint, credentials=creds, tls=tls) as client:
        client.ping()  # with a Bearer challenge this fetches a token: the token server checks them
    where = store_credentials(target.registry, creds, auth_file=args.auth_file)
    if not args.quiet:
        print(f"Login succeeded for {creds.username} at {target.registry} (saved in {where})")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from transfer.registry.credentials import erase_credentials

    target = RegistryPath.parse(args.host)
    removed = erase_credentials(target.registry, auth_file=args.auth_file)
    if not removed:
        raise UsageError(f"not logged in to {target.registry} (no saved credentials found)")
    if not args.quiet:
        print(f"Removed saved credentials for {target.registry}")
    return 0


def register(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "ls-remote", parents=[*parents, registry_options()], formatter_class=fmt,
        help="list the repositories of a registry, or the tags of one repository",
        description="List what a registry holds: with HOST, its repositories (the registry's\n"
        "catalog; --tags adds every tag); with HOST/REPO, the tags of that repository. Sorted.",
        epilog="examples:\n  transfer ls-remote localhost:5000\n  transfer ls-remote localhost:5000 --tags"
        "\n  transfer ls-remote registry.local:5000/team/app --json\n\n" + CREDENTIALS_HELP)
    p.add_argument("location", metavar="HOST[/REPO]", help="registry host[:port], optionally with a repository")
    p.add_argument("--tags", action="store_true", help="with HOST only: list every tag of every repository")
    p.set_defaults(func=cmd_ls_remote)

    p = subparsers.add_parser(
        "login", parents=[*parents], formatter_class=fmt,
        help="check credentials for a registry and save them",
        description="Check a user name and password against a registry (including its token\n"
        "server) and save them as 'docker login' does: base64 'auth' in the auths of the\n"
        "credentials file (mode 0600), or through the configured credential helper.",
        epilog="examples:\n  transfer login registry.local:5000 -u alice        (asks for the password)\n"
        "  cat pw.txt | transfer login registry.local:5000 -u alice --password-stdin\n\n" + CREDENTIALS_HELP)
    p.add_argument("host", metavar="HOST", help="registry host[:port]")
    _add_login_options(p)
    p.set_defaults(func=cmd_login)

    p = subparsers.add_parser(
        "logout", parents=[*parents], formatter_class=fmt,
        help="remove saved credentials for a registry",
        description="Remove the credentials 'transfer login' (or docker/podman login) saved for HOST.")
    p.add_argument("host", metavar="HOST", help="registry host[:port]")
    p.add_argument("--auth-file", "--authfile", dest="auth_file", metavar="FILE",
                   help="credentials file to change (default: $REGISTRY_AUTH_FILE or ~/.docker/config.json)")
    p.set_defaults(func=cmd_logout)


def _add_login_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-u", "--username", metavar="NAME", help="user name (asked for when missing)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--ca-cert", metavar="FILE", help="also trust this CA certificate (PEM) for HTTPS")
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP and unverified TLS")
    p.add_argument("--auth-file", "--authfile", dest="auth_file", metavar="FILE",
                   help="credentials file to write (default: $REGISTRY_AUTH_FILE or ~/.docker/config.json)")
