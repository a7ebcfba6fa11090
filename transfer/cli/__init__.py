"""Command line: argparse wiring, the one place that prints, exits, or imports tqdm.

Each command group lives in its own module with ``register(subparsers)``; every command function
takes the parsed ``args`` and returns an exit code (or raises TransferError, caught once here).
Exit codes: 0 ok, 1 failure, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# The command line uses no pydantic plugins: skip their discovery (a scan of every installed
# distribution, about 50 ms of each run). Set the variable yourself to have plugins loaded.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from transfer import __version__  # noqa: E402
from transfer.errors import TransferError  # noqa: E402

# Modules that contribute commands (each has register(subparsers, parents)) and the commands each
# registers. A run imports only the module of the command it was given; --version, --help, no
# command or an unknown one import none of them: the command list comes from COMMAND_HELP (tests
# check both tables against what the modules register).
COMMAND_MODULES = {
    "transfer.cli.remote": ("ls-remote", "login", "logout"),
    "transfer.cli.bundle": ("ls", "verify", "recover"),
    "transfer.cli.export_cmd": ("export", "inventory"),
    "transfer.cli.import_cmd": ("import",),
    "transfer.cli.copy_cmd": ("copy",),
    "transfer.cli.interop": ("unpack",),
    "transfer.cli.restore_cmd": ("diff", "rm"),
    "transfer.cli.sign_cmd": ("keygen", "sign"),
}

# Each command's one-line help, in the order 'transfer --help' lists them.
COMMAND_HELP = {
    "ls-remote": "list the repositories of a registry, or the tags of one repository",
    "login": "check credentials for a registry and save them",
    "logout": "remove saved credentials for a registry",
    "ls": "list the images in a bundle",
    "verify": "check every byte of a bundle",
    "recover": "rebuild the index of a damaged or interrupted bundle",
    "export": "registry -> bundle file",
    "inventory": "record what a registry holds (for delta exports)",
    "import": "bundle file -> registry (resumable)",
    "copy": "registry -> registry directly (connected networks)",
    "unpack": "bundle -> OCI layout or docker archive (for skopeo, crane, oras, docker)",
    "diff": "how a registry differs from a bundle, tag by tag",
    "rm": "delete one tag's manifest, or a manifest by digest",
    "keygen": "make a key pair for signing bundles",
    "sign": "sign an existing bundle",
}

EPILOG = """\
examples:
  transfer export localhost:5000/app:1.0 -o app.bundle      registry -> bundle
  transfer ls app.bundle                                   what is inside
  transfer verify app.bundle                               check every byte
  transfer import app.bundle registry.local:5000           bundle -> registry (resumable)
  transfer ls-remote localhost:5000                        repositories and tags of a registry
  transfer diff app.bundle registry.local:5000             how the registry differs from the bundle
  transfer import app.bundle registry.local:5000 --prune   restore: make it equal to the bundle
  transfer export ... --sign site.key -o app.bundle        signed; import --key site.pub checks it

Run 'transfer COMMAND --help' for the options of one command.
"""


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts (before or after the command name)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="log HTTP requests (never credentials) and show tracebacks")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="print nothing but errors")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print a machine-readable JSON result on stdout")
    return p


def build_parser(command: str | None = None, *, load_all: bool = False) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, that command's module is loaded and the other commands
    are named only (from COMMAND_HELP); ``load_all`` loads every module (tests compare the two)."""
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="transfer",
        description="Move container images between registries and across air gaps through a "
        "compressed, digest-indexed, resumable bundle file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"transfer {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = list(COMMAND_MODULES) if load_all else [m for m, names in COMMAND_MODULES.items() if command in names]
    for module in modules:
        importlib.import_module(module).register(subparsers, [common])
    for name, text in COMMAND_HELP.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=text, parents=[common])
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The command named in ``argv``: its first word that is not an option (the options before
    a command are flags without values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newlines, terminal escapes such as
    ``\x1b]0;...\x07``) shown as its escape: what a bundle or a registry names must not drive the
    terminal. (Names are refused where they enter; this is the second line.)"""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _setup_logging(debug: bool) -> None:
    import logging  # here, not at the top: --version and --help need none of it

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def _traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    for flag in ("debug", "quiet", "json"):
        if not hasattr(args, flag):
            setattr(args, flag, False)
    _setup_logging(args.debug)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except TransferError as exc:
        _traceback(args.debug)
        print(f"transfer: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # stdout closed early (| head)
        return 1
    except OSError as exc:  # a file we were told to read or write (not found, no space, no access)
        _traceback(args.debug)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"transfer: error: {printable(where + str(exc.strerror or exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("transfer: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug (hostile input must raise a TransferError): one line, no traceback
        _traceback(args.debug)
        text = printable(f"{type(exc).__name__}: {exc}")[:300]
        print(f"transfer: internal error: {text} (run with --debug for the traceback)", file=sys.stderr)
        return 1
