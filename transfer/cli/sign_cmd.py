"""transfer keygen (a signing key pair) and transfer sign (sign an existing bundle in place)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from transfer.cli.common import emit
from transfer.errors import UsageError

KEY_HELP = "PEM private key (ECDSA P-256 or Ed25519); encrypted: passphrase from $TRANSFER_KEY_PASSPHRASE or a prompt"

KEYGEN_EPILOG = """\
examples:
  transfer keygen site                     site.key (mode 0600) and site.pub, ECDSA P-256
  TRANSFER_KEY_PASSPHRASE=... transfer keygen site   the private key encrypted with that passphrase
  transfer keygen --ed25519 site           an Ed25519 pair instead

The same keys with openssl (transfer reads these too):
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out site.key   (add -aes-256-cbc to encrypt)
  openssl pkey -in site.key -pubout -out site.pub
  openssl genpkey -algorithm ED25519 -out site.key                              (Ed25519)

Keep site.key at the exporting site; carry site.pub to the importing site by a trusted path
(not on the same disk as the bundles), and pass it to 'import --key' / 'verify --key'.
"""

SIGN_EPILOG = """\
examples:
  transfer sign site.bundle --key site.key
  transfer sign dvd.bundle --key site.key            every part of a split set dvd.bundle.001, .002, ...
  transfer verify site.bundle --key site.pub

Each part gets its own signature (the last record before its index), so every part can be
checked alone. Signing again replaces the signature (one signer per bundle). A signing
interrupted at any point leaves a bundle that still reads: run it again.
"""


def cmd_keygen(args: argparse.Namespace) -> int:
    import transfer.api
    from transfer.keys import ECDSA_P256, ED25519, PASSPHRASE_ENV

    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None and sys.stdin is not None and sys.stdin.isatty() and not args.no_passphrase:
        import getpass

        passphrase = getpass.getpass(f"Passphrase for {args.prefix}.key (empty: none): ")
        if passphrase and getpass.getpass("Again: ") != passphrase:
            raise UsageError("the passphrases differ; nothing was written")
    report = transfer.api.keygen(args.prefix, algorithm=ED25519 if args.ed25519 else ECDSA_P256,
                                 passphrase=(passphrase or "").encode() or None)
    emit(args, report, [f"wrote {report.private_key} ({'encrypted, ' if report.encrypted else ''}mode 0600) and "
                        f"{report.public_key}: {report.algorithm}, fingerprint {report.fingerprint}"])
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    import transfer.api

    report = transfer.api.sign(args.bundle, args.key)
    again = f" (replaced {report.replaced} earlier signature(s))" if report.replaced else ""
    emit(args, report, [f"signed {args.bundle}: part(s) {', '.join(map(str, report.parts))} with key "
                        f"{report.key} ({report.algorithm}){again}"])
    return 0


def register(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "keygen", parents=parents, help="make a key pair for signing bundles",
        description=textwrap.fill(
            "Make a key pair for signing bundles: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub "
            "(PEM public key). ECDSA P-256 with SHA-256 by default, which 'openssl dgst -sha256 -verify' and "
            "'cosign verify-blob --key' check. The private key is encrypted with the passphrase in "
            "$TRANSFER_KEY_PASSPHRASE, or one asked for at a terminal (empty: not encrypted).", 78),
        epilog=KEYGEN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prefix", metavar="PREFIX", help="writes PREFIX.key and PREFIX.pub (neither may exist)")
    p.add_argument("--ed25519", action="store_true", help="an Ed25519 key pair instead of ECDSA P-256")
    p.add_argument("--no-passphrase", action="store_true", help="do not ask for a passphrase at a terminal")
    p.set_defaults(func=cmd_keygen)

    p = subparsers.add_parser(
        "sign", parents=parents, help="sign an existing bundle",
        description=textwrap.fill(
            "Sign every part of a complete bundle in place: each part's tail becomes a signature "
            "record over the part's statement (every record's digest and size, every image's repository, tags "
            "and root, the export's metadata), then a new index. Holds the bundle's lock.", 78),
        epilog=SIGN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle file, or a split set's name (NAME for NAME.001, ...)")
    p.add_argument("--key", required=True, metavar="KEY", help=KEY_HELP)
    p.set_defaults(func=cmd_sign)
