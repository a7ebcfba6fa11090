"""The public API: one function per job, each a plan handed to the one copy engine
(``transfer.engine.Copier``) between two stores, returning a typed report. The command line is a
shell around these (argparse, rendering, exit codes). See docs/api.md.

Every function raises only ``transfer.errors.TransferError`` subclasses on purpose. A job that ran
but did not finish everything (images failed with ``keep_going``, tags not at the bundle's digest,
content still to arrive) raises ``IncompleteError`` whose ``report`` says what was done; running
the same call again continues it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, overload

from transfer.bundle import BundleReader, BundleWriter, rewrite_index
from transfer.bundle.format import BundlePlan
from transfer.bundle.sequential import BundleIO, BundleStream, is_stream_path, stream_input
from transfer.engine import Copier, CopyStats, parallel_map
from transfer.errors import (CorruptBundleError, ImagePolicyError, IncompleteError, NotFoundError, SignatureError,
                             TransferError, UsageError)
from transfer.keys import ECDSA_P256, PrivateKey, PublicKey
from transfer.models import Descriptor
from transfer.options import (CopyOptions, ExportOptions, ImportOptions, InventoryOptions, RegistryAccess,
                              UnpackOptions)
from transfer.progress import NullProgress, Progress
from transfer.reference import Reference, RegistryPath
from transfer.registry import RegistryStore
from transfer.reports import (CopyReport, Deletion, DiffReport, ExportReport, ImageSignature, ImportPlanReport,
                              ImportReport, InventoryReport, KeygenReport, PartImportReport, PruneReport, RecoverReport,
                              RemoteListing, RemoteRepository, Report, RmReport, SignatureStatus, SignReport,
                              SpanningReport, UnpackReport, UploadReport, Waiting, as_failures, counts)
from transfer.selection import (CatalogFilter, Selection, declare_expected, is_referrer_tag, iter_plans,
                                noting_platforms, parse_platforms, parse_reference_file, select_repositories)
from transfer.store import ImagePlan, Source

if TYPE_CHECKING:  # (the modules themselves are imported where a job uses them: a fast start)
    from transfer.bundle.verify import VerifyReport
    from transfer.cosign import PolicyResult
    from transfer.import_ import SpanningBlob, TagDecisions
    from transfer.interop import RenamedSource

JOURNAL_MAX_AGE = 7 * 24 * 3600  # distribution purges unfinished uploads after 168 h

SigningKey = str | os.PathLike[str] | PrivateKey  # a PEM private key file, or one loaded (transfer.keys)
TrustedKey = str | os.PathLike[str] | PublicKey  # a PEM public key file, or one loaded


def _output_stream(output: BundleIO) -> BinaryIO | None:
    if not isinstance(output, str):
        return output
    return sys.stdout.buffer if output == "-" else None


# -- export ---------------------------------------------------------------------------------------

def export(images: Sequence[str], output: BundleIO, *, catalog: str | None = None, source: str | None = None,
           reference_files: Sequence[str] = (), options: ExportOptions | None = None,
           access: RegistryAccess | None = None, progress: Progress | None = None,
           sign: SigningKey | None = None) -> ExportReport:
    """Images (references like ``registry:5000/app:1.0``), a whole registry (``catalog="HOST"``)
    or another tool's files (``source="oci:DIR"`` / ``"docker-archive:FILE"``) into the bundle
    ``output``: a path (running it again continues it), or ``"-"`` (standard output) or a binary
    stream, written front to back with bounded memory (one part; not continued). ``sign``: a
    private key (path or ``transfer.keys.PrivateKey``) that signs every part as it is closed."""
    from transfer.bundle.signing import load_signing_key

    opts, progress = options or ExportOptions(), progress or NullProgress()
    key = load_signing_key(sign) if sign is not None else None  # before any work: a passphrase is asked now
    started, failures = time.monotonic(), list[tuple[str, str]]()
    src, selections, host = _export_source(list(images), list(reference_files), catalog, source, opts,
                                           access or RegistryAccess())
    with closing(src):
        notes: list[str] = []
        plans = noting_platforms(iter_plans(src, selections, platforms=parse_platforms(opts.platforms),
                                            referrers=opts.referrers, keep_going=opts.keep_going, failures=failures,
                                            lookups=opts.lookups, progress=progress), notes, progress)
        stats, writer, expected = _write_bundle(src, plans, output, host, opts, progress, failures, key)
    signature = None if key is None else SignatureStatus(signed=True, keys=[key.fingerprint], algorithm=key.algorithm,
                                                         parts=writer.signed_parts)
    report = ExportReport(**counts(stats, time.monotonic() - started), bundle=writer.path, complete=not stats.failures,
                          expected_at_destination=expected, bytes_written=writer.bytes_written,
                          platform_notes=notes, signature=signature)
    if stats.failures:
        raise IncompleteError(f"{len(stats.failures)} image(s) failed; {writer.path} is left incomplete "
                              "(fix the cause and run the same command again to finish it)", report)
    return report


def _write_bundle(src: Source, planned: Iterable[ImagePlan], output: BundleIO, host: str, opts: ExportOptions,
                  progress: Progress, failures: list[tuple[str, str]],
                  key: PrivateKey | None = None) -> tuple[CopyStats, BundleWriter, int]:
    """Copy the plans into the bundle; with any failure (``failures``: those of planning) the
    bundle is left unfinished, never marked complete. Format version 2 writes the plan and every
    manifest before the first blob, so the planning (parallel, transfer.selection.iter_plans)
    finishes before the blobs move."""
    from transfer.inventories import load_have
    plans = list(planned)
    writer = BundleWriter(_output_stream(output) or output, split_size=opts.split_size, level=opts.level, threads=opts.threads,
                          source_registry=host, sign=key)
    with writer:
        expected = declare_expected(writer, plans, load_have(opts.have, opts.since)) if opts.have or opts.since else 0
        early = writer.set_plan(BundlePlan(tuple(plans)))  # the plan and the manifests before any blob
        for plan in plans:  # held to the end of the run: the bytes of manifests stored now are not needed again
            if all(writer.stored(d.digest) for d in plan.manifests):
                plan.raw = {}
        stats = Copier(src, writer, progress=progress, jobs=opts.jobs, keep_going=opts.keep_going).execute(plans)
        stats.manifests_copied, stats.manifests_skipped = stats.manifests_copied + early, stats.manifests_skipped - early
        stats.failures[:0] = failures
        if stats.failures:
            writer.abort()  # what was stored stays, but the bundle never looks complete
    return stats, writer, expected


def _export_source(images: list[str], files: list[str], catalog: str | None, source: str | None,
                   opts: ExportOptions, access: RegistryAccess) -> tuple[RegistryStore | RenamedSource, list[Selection], str]:
    """(source store, selections, source name): a registry, or a layout or archive."""
    filt = CatalogFilter(opts.include, opts.exclude, opts.tags)
    if source:
        from transfer.interop import export_source  # tarfile and the layout code: only for --from
        if images or files or catalog or opts.all_tags:
            raise UsageError("--from names the source on its own: drop REF, -f, --catalog and --all-tags "
                             "(select one image with --from oci:DIR:REF)")
        return export_source(source, opts.repository, filt)
    if catalog:
        if images or files:
            raise UsageError("--catalog HOST exports a whole registry; do not name images with it")
        store = RegistryStore(access.client(RegistryPath.parse(catalog).registry, connections=_connections(opts)))
        return store, _guarded(store, lambda: select_repositories(store, store.repositories(), filt,
                                                                  lookups=opts.lookups)), store.client.host
    refs = _references(images, files)
    store = RegistryStore(access.client(refs[0].registry, connections=_connections(opts)))
    return store, _guarded(store, lambda: _ref_selections(store, refs, opts)), refs[0].registry


def _connections(opts: ExportOptions | CopyOptions) -> int:
    """Connections kept alive to a source: one for each thread that may ask at once."""
    return opts.jobs + opts.lookups


def _guarded(store: RegistryStore, select: Callable[[], list[Selection]]) -> list[Selection]:
    """``select()``, closing ``store`` if it fails."""
    try:
        return select()
    except BaseException:
        store.close()
        raise


def _references(images: list[str], files: list[str]) -> list[Reference]:
    texts = images + [ref for path in files for ref in parse_reference_file(path)]
    if not texts:
        raise UsageError("nothing to export: name images (REF ...), -f FILE, --catalog HOST or --from oci:DIR")
    refs = [Reference.parse(t) for t in texts]
    hosts = sorted({r.registry for r in refs})
    if len(hosts) > 1:
        raise UsageError(f"one source registry per bundle, got {', '.join(hosts)}; export them separately")
    return refs


def _ref_selections(store: RegistryStore, refs: list[Reference], opts: ExportOptions) -> list[Selection]:
    selections: list[Selection] = []
    for ref in refs:
        if opts.all_tags:
            selections += select_repositories(store, [ref.repository], CatalogFilter(tag_regex=opts.tags),
                                              lookups=opts.lookups)
        else:
            selections.append(Selection(ref.repository, ref.digest or ref.tag or "latest"))
    return selections


# -- import ---------------------------------------------------------------------------------------

def upload_store(access: RegistryAccess, host: str, opts: ImportOptions | CopyOptions, source_id: str) -> RegistryStore:
    """A registry store whose blob pushes are chunked and resumable through the journal; a
    connection kept alive for each thread that may ask at once (transfers and lookups)."""
    from transfer.registry.journal import UploadJournal
    from transfer.registry.settings import load_registry_settings
    from transfer.registry.upload import ChunkedUploader

    settings = load_registry_settings(opts.registry_config) if opts.registry_config else None
    journal = UploadJournal(opts.journal or default_journal())
    journal.prune(JOURNAL_MAX_AGE)
    uploader = ChunkedUploader(opts.chunk_size, settings=settings, journal=journal, source=source_id)
    return RegistryStore(access.client(host, connections=opts.jobs + opts.lookups), uploader=uploader)


def default_journal() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "transfer", "uploads.json")


def _upload_report(store: RegistryStore) -> UploadReport:
    from transfer.registry.upload import ChunkedUploader

    if not isinstance(store.uploader, ChunkedUploader):
        return UploadReport(mounted=store.mounted)
    return UploadReport(**store.uploader.stats.__dict__, mounted=store.mounted, notes=store.uploader.notes)


def import_bundle(bundle: BundleIO, target: str, *, options: ImportOptions | None = None,
                  access: RegistryAccess | None = None, progress: Progress | None = None,
                  keys: Sequence[TrustedKey] = ()) -> ImportReport:
    """Push every image of ``bundle`` to ``target`` (``HOST[:PORT][/PREFIX]``): blobs, then child
    manifests, then roots, then tags; every written tag checked afterwards. Given the parts of a
    split set present, imports what they allow (a ``PartImportReport`` says what waits).

    ``bundle`` may be ``"-"`` (standard input), a binary stream, or a FIFO: it is then read once,
    front to back, blobs uploaded as they pass and each image finished as soon as its last blob
    has; a stream cut short keeps what reached the registry, and the same import again skips it.

    ``keys``: trusted public keys (paths or ``transfer.keys.PublicKey``); the bundle must be signed
    by one of them, its statement must match it, and every record is read back against what was
    signed (a verifying pass, reading the bundle once more) before anything is pushed; otherwise
    ``SignatureError`` and nothing reaches the registry. A stream is refused with keys (its
    signature comes at its end, after the images would be pushed)."""
    from transfer.import_ import RepositoryMapping, forget_finished, plan_imports, push_spanning, recorded_plans, verify_tags
    from transfer.restore import run_prune
    trusted = _trusted(keys)
    stream = stream_input(bundle)
    if stream is not None and trusted:
        raise UsageError("--key cannot check a bundle read from a stream before importing it: its signature comes at "
                         "the end, after the images would be pushed; save it to a file and import that (or "
                         "check the stream with 'transfer verify - --key PUB' first)")
    if stream is not None:
        return _import_stream(*stream, target, options or ImportOptions(), access or RegistryAccess(),
                              progress or NullProgress())
    assert isinstance(bundle, str)
    opts, started = options or ImportOptions(), time.monotonic()
    path = RegistryPath.parse(target)
    mapping = RepositoryMapping.parse(path.path, opts.map)
    image_keys = _trusted_keys(opts)
    with BundleReader(bundle) as reader:
        by_parts = reader.split and not reader.info.complete and reader.plan is not None
        if not by_parts and not reader.info.complete and not opts.allow_incomplete:
            raise TransferError(f"{bundle} is incomplete (its export did not finish); finish the "
                                "export, or pass --allow-incomplete to import what it holds")
        _check_prune(bundle, reader, opts, by_parts)
        if by_parts and image_keys:
            raise UsageError(f"--require-signed needs every part of {bundle} together: an image's signature may be "
                             "in a later part than the image, and each part is imported alone; bring the parts "
                             "together, or import them one by one without --require-signed")
        signature = _import_signature(reader, trusted, progress or NullProgress())
        plans = recorded_plans(reader, mapping) if by_parts else plan_imports(reader, reader.entries, mapping)
        plans, policy = _signature_policy(reader, plans, image_keys, opts, lambda **f: ImportReport(target=str(path), **f))
        with closing(upload_store(access or RegistryAccess(), path.registry, opts, os.path.abspath(bundle))) as dst:
            decisions, pruning = _prepare_import(dst, reader.expected, plans, opts, progress or NullProgress())
            forget_finished(dst, plans, decisions.tagged)
            spanning = push_spanning(reader, dst, plans) if by_parts else []
            copier = Copier(reader, dst, progress=progress, jobs=opts.jobs, keep_going=opts.keep_going,
                            tagged=decisions.tagged, tags_asked=True)
            stats = copier.execute(plans)
            _add_verdicts(stats, policy)
            final = reader.parts[-1].doc.final if by_parts else True
            complete = set(stats.complete)
            done = [p for p in plans if p.label in complete]
            fields: dict[str, Any] = dict(counts(stats, time.monotonic() - started), target=str(path), upload=_upload_report(dst),
                          tag_problems=verify_tags(dst, done, opts.lookups, known=decisions.tagged | dst.confirmed_tags)
                          if final else [], notes=decisions.notes, image_signatures=_image_signatures(policy))
            fields["signature"] = signature
            if by_parts:
                return _part_report(bundle, target, reader, stats, spanning, fields)
            report = ImportReport(**fields)
            _raise_refused(report, policy)
            _raise_unless_done(report, stats)
            if pruning is not None:  # everything is pushed and checked: now delete what the bundle lacks
                report.prune = run_prune(dst, pruning)
    return report


def _trusted(keys: Sequence[TrustedKey]) -> list[PublicKey]:
    from transfer.bundle.signing import load_trusted_keys

    return load_trusted_keys(keys) if keys else []


def _import_signature(reader: BundleReader, trusted: list[PublicKey], progress: Progress) -> SignatureStatus | None:
    """With trusted keys: check every part's signature and statement, then read every record back
    against what was signed (a verifying pass), before anything is pushed; SignatureError names
    the first thing that fails. Without: whether the bundle is signed (then said: not checked)."""
    from transfer.bundle.verify import verify as verify_bundle
    from transfer.bundle import signing

    if not trusted:
        first = signing.inspect_part(reader.parts[0])
        if not first.signed:
            return None
        note = (f"the bundle is signed (key {first.key}), but the signature was not checked: "
                "pass --key PUB (keys=) to check it")
        progress.message(f"note: {note}")
        return SignatureStatus(signed=True, keys=[first.key or ""], algorithm=first.algorithm,
                               parts=[first.number], notes=[note])
    checks = signing.check_bundle(reader, trusted)
    problems = [p for p in verify_bundle(reader.base if reader.split else reader.path).problems
                if not p.message.startswith("INCOMPLETE")]
    if problems:
        raise SignatureError(f"{reader.path}: refused, the bundle does not match what was signed: {problems[0]}")
    return signing.status(checks, checked=True)


def _prepare_import(dst: RegistryStore, expected: list[Descriptor], plans: list[ImagePlan], opts: ImportOptions,
                    progress: Progress) -> tuple[TagDecisions, PruneReport | None]:
    """Everything asked and refused before the first write: blobs a delta bundle expects (then
    cross-mounted where a repository lacks them), the deletions of --prune (and whether the
    registry allows them), the tags already there."""
    from transfer.import_ import check_expected, decide_tags, mount_expected, mount_homes
    from transfer.inventories import load_have
    dst.add_homes(mount_homes(plans, expected, load_have(opts.have, None) if opts.have else None))
    mounts = check_expected(dst, plans, {d.digest for d in expected})
    pruning = _plan_prune(dst, plans, opts.lookups) if opts.prune else None
    decisions = decide_tags(dst, plans, opts.on_existing, opts.lookups)
    mount_expected(dst, mounts)
    for note in decisions.notes:
        progress.message(note)
    return decisions, pruning


def _check_prune(bundle: str, reader: BundleReader, opts: ImportOptions, by_parts: bool) -> None:
    """--prune only where the bundle speaks for whole repositories (UsageError otherwise)."""
    if not opts.prune:
        return
    if by_parts or not reader.info.complete:
        raise UsageError(f"--prune needs a complete bundle: {bundle} is "
                         + ("a split set without all its parts" if by_parts else "unfinished")
                         + ", so it may lack images, and pruning would delete what it simply did not carry "
                           "(import without --prune, or bring every part)")
    if opts.on_existing == "skip":
        raise UsageError("--prune makes the registry equal to the bundle; --on-existing skip keeps tags at other "
                         "digests: choose one")


def _plan_prune(dst: RegistryStore, plans: list[ImagePlan], jobs: int,
                tag_ok: Callable[[str], bool] = lambda tag: True) -> PruneReport:
    """Ask the registry for its tags before anything is pushed, plan the deletions, and make
    sure (a probe) the registry allows them: a refusal comes before anything is written."""
    from transfer.restore import plan_prune, registry_tags
    report = plan_prune(dst, plans, registry_tags(dst, sorted({p.dst_repo for p in plans}), jobs), tag_ok)
    for repo in sorted({d.repository for d in report.deletions}):
        dst.check_delete(repo)
    return report


def _import_stream(stream: BinaryIO, name: str, target: str, opts: ImportOptions, access: RegistryAccess,
                   progress: Progress) -> ImportReport:
    """The same copy over a bundle that passes by (transfer.bundle.sequential): one image at a time,
    in the order the export wrote them, so each blob is at the head of the stream when its turn comes."""
    from transfer.import_ import RepositoryMapping, recorded_plans, verify_tags
    started, path = time.monotonic(), RegistryPath.parse(target)
    if opts.require_signed:
        raise UsageError("--require-signed needs the bundle as a file: in a stream an image's signature comes after "
                         "the image, so it could not be checked before the image is pushed; save the stream to a "
                         "file and import that")
    if opts.prune:
        raise UsageError("--prune needs the bundle as a file: a stream's end (is the bundle complete?) is known "
                         "only after everything was pushed; import the stream, then prune from the file or "
                         "compare with 'transfer diff'")
    src = BundleStream(stream, name)
    src.importable()
    plans = recorded_plans(src, RepositoryMapping.parse(path.path, opts.map))  # type: ignore[arg-type]
    with closing(upload_store(access, path.registry, opts, f"stream {name}")) as dst:
        decisions, _ = _prepare_import(dst, [Descriptor.model_validate(d) for d in src.doc.expected], plans, opts,
                                       progress)
        copier = Copier(src, dst, progress=progress, jobs=1, keep_going=opts.keep_going, tagged=decisions.tagged)
        try:
            for plan in plans:
                copier.execute([plan])
            index = src.finish()
        except TransferError as exc:
            report = ImportReport(**counts(copier.stats, time.monotonic() - started), target=str(path),
                                  upload=_upload_report(dst), notes=decisions.notes)
            why = f"the bundle stream broke off or is damaged ({exc})" if isinstance(exc, CorruptBundleError) else str(exc)
            raise IncompleteError(f"{name}: {why}; {report.blobs_copied} blob(s) and {report.images} image(s) "
                                  f"reached {path} and are kept: run the same import again with the whole "
                                  "bundle (stream or file) to finish", report) from exc
        complete = set(copier.stats.complete)
        done = [p for p in plans if p.label in complete]
        report = ImportReport(**counts(copier.stats, time.monotonic() - started), target=str(path),
                              upload=_upload_report(dst), tag_problems=verify_tags(dst, done, opts.lookups),
                              notes=decisions.notes, signature=_stream_signature(src, name, progress))
    if not index.complete and not opts.allow_incomplete:
        raise IncompleteError(f"{name}: the bundle's export did not finish (its index is marked incomplete): what "
                              "it held was imported; pass --allow-incomplete to accept that", report)
    _raise_unless_done(report, copier.stats)
    return report


def _stream_signature(src: BundleStream, name: str, progress: Progress) -> SignatureStatus | None:
    """A signed stream imported without keys: say that its signature was not checked."""
    from transfer.bundle.signing import decode_signature

    if src.signature is None:
        return None
    try:
        signed = decode_signature(src.signature, name)
    except TransferError:
        return SignatureStatus(signed=True, notes=["the signature record is malformed; it was not checked"])
    note = (f"the bundle is signed (key {signed.key}), but the signature was not checked: a stream cannot be "
            "checked before it is imported (import the file with --key PUB, or 'transfer verify - --key PUB')")
    progress.message(f"note: {note}")
    return SignatureStatus(signed=True, keys=[signed.key], algorithm=signed.algorithm, parts=[1], notes=[note])


def _raise_unless_done(report: ImportReport, stats: CopyStats, *, final: bool = True) -> None:
    if report.tag_problems:
        raise IncompleteError(f"{len(report.tag_problems)} tag(s) do not point at the bundle's digest after the "
                              "import", report)
    if report.failures:
        raise IncompleteError(f"{len(report.failures)} image(s) failed to import; run the same command again", report)
    if stats.waiting and final:
        raise IncompleteError(f"the import is incomplete: {len(stats.waiting)} image(s) wait for content that is in "
                              "none of the parts imported (import the part(s) holding it, then the last part again)"
                              if isinstance(report, PartImportReport) else
                              f"{len(stats.waiting)} image(s) need content the bundle does not hold "
                              f"(e.g. {stats.waiting[0][0]}: {stats.waiting[0][1]})", report)


def part_path(bundle: str, number: int) -> str:
    """The path of part ``number`` next to the part (or set) the user named."""
    m = re.match(r"^(.*)\.\d{3}$", bundle)
    return f"{m.group(1) if m else bundle}.{number:03d}"


def _part_report(bundle: str, target: str, reader: BundleReader, stats: CopyStats,
                 spanning: list[SpanningBlob], fields: dict[str, Any]) -> PartImportReport:
    final = reader.parts[-1].doc.final
    parts = [p.number for p in reader.parts]
    again = [s.part - 1 for s in spanning if s.needs_earlier]
    pending = stats.waiting or any(s.held < s.size for s in spanning)
    nxt = min(again) if again else None if final or not pending else max(parts) + 1
    notes = list(fields.pop("notes"))
    notes += [_lost_session(s, fields["target"]) for s in spanning if s.restarted]
    report = PartImportReport(
        **fields, notes=notes, parts_present=parts, final=final, next_part=nxt,
        next_command=None if nxt is None else f"transfer import {part_path(bundle, nxt)} {target}",
        spanning=[SpanningReport(digest=s.digest, repository=s.repository, size=s.size, part=s.part,
                                 present=list(s.present), held=s.held, restarted=s.restarted) for s in spanning],
        images_complete=stats.complete,
        images_waiting=[Waiting(image=label, waits_for=what) for label, what in stats.waiting])
    _raise_unless_done(report, stats, final=final)
    return report


def _lost_session(s: SpanningBlob, target: object) -> str:
    start = s.present[0]
    return (f"the upload session of blob {s.digest} at {target}/{s.repository} was lost (the registry restarted "
            "without a fixed http.secret, or purged its uploads): the blob starts over "
            + (f"when its first bytes are imported again (part {s.part - 1} or earlier, then part {s.part})"
               if start else "from byte 0"))


def import_plan(bundle: str, target: str, *, options: ImportOptions | None = None,
                access: RegistryAccess | None = None, keys: Sequence[TrustedKey] = ()) -> ImportPlanReport:
    """What ``import_bundle`` would push and tag (``import --dry-run``); writes nothing. With
    ``keys``, the signature and statement of every part are checked first (SignatureError); the
    records themselves are read back by the import."""
    from transfer.import_ import RepositoryMapping, check_expected, decide_tags, mount_homes, plan_imports
    from transfer.inventories import load_have
    from transfer.bundle.signing import check_bundle
    from transfer.import_ import push_plan

    trusted = _trusted(keys)
    opts = options or ImportOptions()
    if is_stream_path(bundle):
        raise UsageError(f"a dry run reads the bundle without importing it, so it needs a file, not {bundle}")
    path = RegistryPath.parse(target)
    mapping = RepositoryMapping.parse(path.path, opts.map)
    with BundleReader(bundle) as reader:
        if reader.split and not reader.info.complete:
            raise UsageError("--dry-run needs every part of a split bundle together")
        if trusted:
            check_bundle(reader, trusted)
        plans = plan_imports(reader, reader.entries, mapping)
        image_keys, refusals = _trusted_keys(opts), list[str]()
        if image_keys:  # what the import would refuse: listed, and left out of the plan
            from transfer.cosign import enforce

            policy = enforce(reader, plans, image_keys, opts.lookups)
            plans, refusals = policy.plans, [f"would refuse {label}: {why.removeprefix('refused by ')}"
                                             for label, why in policy.refused]
        with closing(RegistryStore((access or RegistryAccess()).client(path.registry))) as dst:
            _check_prune(bundle, reader, opts, False)
            dst.add_homes(mount_homes(plans, reader.expected, load_have(opts.have, None) if opts.have else None))
            check_expected(dst, plans, {d.digest for d in reader.expected})
            pruning = _plan_prune(dst, plans, opts.lookups) if opts.prune else None
            decisions = decide_tags(dst, plans, opts.on_existing, opts.lookups)
            return ImportPlanReport(**push_plan(dst, plans), notes=refusals + decisions.notes, prune=pruning)


# -- copy -----------------------------------------------------------------------------------------

def copy(source: str, destination: str, *, catalog: bool = False, options: CopyOptions | None = None,
         access: RegistryAccess | None = None, progress: Progress | None = None) -> CopyReport:
    """Registry to registry, for connected networks: ``copy("a:5000/app:1.0", "b:5000/app:1.0")``,
    or with ``catalog=True`` every repository of ``source`` (a host) under ``destination``
    (``HOST[/PREFIX]``). The same plans and resumable uploads as export and import."""
    from transfer.import_ import RepositoryMapping, decide_tags, mount_homes, verify_tags
    from transfer.inventories import load_have
    from transfer.restore import run_prune
    opts, access, started = options or CopyOptions(), access or RegistryAccess(), time.monotonic()
    failures: list[tuple[str, str]] = []
    image_keys = _trusted_keys(opts)
    if opts.prune and not catalog:
        raise UsageError("--prune mirrors whole repositories: use it with --catalog (a copy of one image "
                         "would delete every other tag of its repository)")
    if catalog:
        src_host, dst_path = RegistryPath.parse(source).registry, RegistryPath.parse(destination)
    else:
        src_ref, dst_ref = Reference.parse(source), Reference.parse(destination, default_tag=None)
        src_host, dst_path = src_ref.registry, RegistryPath(dst_ref.registry, dst_ref.repository)
    with closing(RegistryStore(access.client(src_host, connections=_connections(opts)))) as src, \
            closing(upload_store(access, dst_path.registry, opts, f"copy from {src_host}")) as dst:
        if catalog:
            selections = select_repositories(src, src.repositories(), CatalogFilter(opts.include, opts.exclude, opts.tags),
                                             lookups=opts.lookups)
            mapping = RepositoryMapping.parse(dst_path.path, [])
        else:
            selections = [Selection(src_ref.repository, src_ref.digest or src_ref.tag or "latest")]
            mapping = RepositoryMapping.parse("", [f"{src_ref.repository}={dst_path.path}"])
        notes: list[str] = []
        plans = list(noting_platforms(iter_plans(src, selections, platforms=parse_platforms(opts.platforms),
                                                 referrers=opts.referrers, keep_going=opts.keep_going,
                                                 failures=failures, lookups=opts.lookups, progress=progress),
                                      notes, progress or NullProgress()))
        for plan in plans:
            plan.dst_repo = mapping.target(plan.src_repo)
        if not catalog and dst_ref.tag and plans:
            plans[0].tags = [dst_ref.tag]
        plans, policy = _signature_policy(src, plans, image_keys, opts, lambda **f: CopyReport(**f))
        dst.add_homes(mount_homes(plans, [], load_have(opts.have, None) if opts.have else None))
        pruning = _plan_prune(dst, plans, opts.lookups, _copy_tag_filter(opts)) if opts.prune and not failures else None
        decisions = decide_tags(dst, plans, "overwrite", opts.lookups)  # tags already right: not written again
        for note in decisions.notes:
            (progress or NullProgress()).message(note)
        stats = Copier(src, dst, progress=progress, jobs=opts.jobs, keep_going=opts.keep_going,
                       tagged=decisions.tagged, tags_asked=True).execute(plans)
        problems = verify_tags(dst, plans, opts.lookups, known=decisions.tagged | dst.confirmed_tags)
        stats.failures[:0] = failures
        _add_verdicts(stats, policy)
        report = CopyReport(**counts(stats, time.monotonic() - started), upload=_upload_report(dst),
                            tag_problems=problems, platform_notes=notes, image_signatures=_image_signatures(policy))
        _raise_refused(report, policy)
        if problems or stats.failures:
            raise IncompleteError(f"{len(stats.failures)} image(s) failed, {len(problems)} tag problem(s)"
                                  + ("; nothing was pruned" if opts.prune else ""), report)
        if pruning is not None:
            report.prune = run_prune(dst, pruning)
    return report


def _copy_tag_filter(opts: CopyOptions) -> Callable[[str], bool]:
    """The destination tags a catalog copy speaks for: those its --tags filter takes, and
    referrer tags only when referrers travel."""
    filt = CatalogFilter(tag_regex=opts.tags)
    return lambda tag: filt.tag_ok(tag) and (opts.referrers or not is_referrer_tag(tag))


# -- the image-signature policy (--require-signed; transfer/cosign.py) ------------------------------

def _trusted_keys(opts: ImportOptions | CopyOptions) -> list["PublicKey"]:
    """The public keys of ``require_signed``, read before anything else (a bad key is a usage error)."""
    if not opts.require_signed:
        return []
    from transfer.cosign import load_trusted_keys

    return load_trusted_keys(opts.require_signed)


def _signature_policy(src: Source, plans: list[ImagePlan], keys: list["PublicKey"], opts: ImportOptions | CopyOptions,
                      report: Callable[..., Report]) -> tuple[list[ImagePlan], "PolicyResult | None"]:
    """With trusted ``keys``: the plans that pass (and their signatures), checked before anything is
    pushed; refused images raise ImagePolicyError (``report(**fields)`` lists them) unless
    ``keep_going``, which leaves them out."""
    if not keys:
        return plans, None
    from transfer.cosign import enforce

    policy = enforce(src, plans, keys, opts.lookups)
    if policy.refused and not opts.keep_going:
        raise ImagePolicyError(policy.message(), report(failures=as_failures(policy.refused),
                                                         image_signatures=_image_signatures(policy)))
    return policy.plans, policy


def _add_verdicts(stats: CopyStats, policy: "PolicyResult | None") -> None:
    """The refused images among the failures, those waiting for their signature among the waiting."""
    if policy is not None:
        stats.failures[:0] = policy.refused
        stats.waiting += policy.waiting


def _image_signatures(policy: "PolicyResult | None") -> list[ImageSignature]:
    return [] if policy is None else [
        ImageSignature(image=v.plan.label, digest=v.plan.root.digest, verified=v.verified, key=v.key,
                       signature=v.signature, reason=v.reason or v.waits_for) for v in policy.verdicts]


def _raise_refused(report: ImportReport | CopyReport, policy: "PolicyResult | None") -> None:
    """With ``keep_going``: the images that passed were pushed; refusals (and nothing else wrong) end in
    ImagePolicyError."""
    refused = policy.refused if policy is not None else []
    if refused and len(report.failures) == len(refused) and not report.tag_problems:
        passed = sum(1 for v in policy.verdicts if v.verified) if policy is not None else 0
        raise ImagePolicyError(f"{len(refused)} image(s) refused by --require-signed (e.g. {refused[0][0]}); "
                               f"the {passed} that passed were pushed with their signatures", report)


# -- diff, rm -------------------------------------------------------------------------------------

def diff(bundle: str, target: str, *, options: ImportOptions | None = None,
         access: RegistryAccess | None = None) -> DiffReport:
    """How the repositories of ``target`` (``HOST[/PREFIX]``, with ``options.map``) that ``bundle``
    covers differ from it, per tag: missing at the registry, extra there, or at another digest.
    Reads only; ``report.equal`` is True when an import with ``prune`` would change nothing."""
    from transfer.import_ import RepositoryMapping, plan_imports
    from transfer.restore import diff_tags, registry_tags
    opts = options or ImportOptions()
    path = RegistryPath.parse(target)
    mapping = RepositoryMapping.parse(path.path, opts.map)
    with BundleReader(bundle) as reader, \
            closing(RegistryStore((access or RegistryAccess()).client(path.registry, connections=opts.lookups))) as dst:
        plans = plan_imports(reader, reader.entries, mapping)
        tags = diff_tags(plans, registry_tags(dst, sorted({p.dst_repo for p in plans}), opts.lookups))
        untagged = [p for p in plans if not p.tags]
        absent = [p for p, there in zip(untagged, parallel_map(lambda p: dst.exists(p.dst_repo, p.root), untagged,
                                                               opts.lookups)) if not there]
    by_status = {s: sum(1 for t in tags if t.status == s) for s in ("missing", "extra", "changed", "same")}
    return DiffReport(bundle=bundle, target=str(path), **by_status, tags=[t for t in tags if t.status != "same"],
                      untagged_missing=[f"{p.dst_repo}@{p.root.digest}" for p in absent])


def rm(reference: str, *, dry_run: bool = False, access: RegistryAccess | None = None) -> RmReport:
    """Delete ``HOST/REPO:TAG`` or ``HOST/REPO@DIGEST`` from its registry: the manifest by digest,
    which drops every tag pointing at it (the report lists them). ``dry_run``: only say what
    would go. Refuses (before deleting) where the registry does not allow deleting."""
    from transfer.restore import registry_tags
    ref = Reference.parse(reference, default_tag=None)
    if not (ref.tag or ref.digest):
        raise UsageError(f"rm {reference}: name a tag (REPO:TAG) or a digest (REPO@DIGEST)")
    with closing(RegistryStore((access or RegistryAccess()).client(ref.registry))) as dst:
        digest = ref.digest or dst.client.head_manifest(ref.repository, ref.tag or "").digest
        state = registry_tags(dst, [ref.repository])[ref.repository]
        deletion = Deletion(repository=ref.repository, digest=digest, reason="asked",
                            tags=sorted(t for t, d in state.items() if d == digest))
        dst.check_delete(ref.repository)
        if not dry_run and not dst.delete(ref.repository, digest):
            raise NotFoundError(f"{ref.registry}/{ref.repository}@{digest}: no such manifest")
    return RmReport(target=f"{ref.registry}/{ref.repository}", deletion=deletion, deleted=not dry_run, dry_run=dry_run)


# -- inventory, unpack, verify, open_bundle -------------------------------------------------------

def inventory(location: str, output: str, *, options: InventoryOptions | None = None,
              access: RegistryAccess | None = None) -> InventoryReport:
    """Record what a registry (``HOST``) or one repository of it (``HOST/REPO``) holds into
    ``output``, for ``export(..., options=ExportOptions(have=output))`` at the source site."""
    from transfer.inventories import build_inventory, write_inventory
    opts, target = options or InventoryOptions(), RegistryPath.parse(location)
    with closing(RegistryStore((access or RegistryAccess()).client(target.registry))) as store:
        data = build_inventory(store, target, include=opts.include, exclude=opts.exclude)
    write_inventory(data, output)
    return InventoryReport(output=output, repositories=len(data["repositories"]), blobs=len(data["blobs"]))


def unpack(bundle: str, *, oci: str | None = None, docker_archive: str | BinaryIO | None = None,
           images: Sequence[str] = (), options: UnpackOptions | None = None,
           progress: Progress | None = None) -> UnpackReport:
    """Write images of ``bundle`` (default all; ``images`` as ``transfer ls`` names them) as an OCI
    image layout directory (``oci=``) or a ``docker load`` tar (``docker_archive=``: a path, or a
    binary stream written front to back, e.g. ``sys.stdout.buffer`` piped into ``docker load``)."""
    from transfer import interop
    from transfer.docker_archive import DockerArchiveWriter
    from transfer.layout import OciLayout

    opts, started = options or UnpackOptions(), time.monotonic()
    if (oci is None) == (docker_archive is None):
        raise UsageError("unpack writes one thing: give oci=DIR or docker_archive=FILE")
    out = oci or (docker_archive if isinstance(docker_archive, str) else str(getattr(docker_archive, "name", "-")))
    with BundleReader(bundle) as reader:
        if not reader.info.complete and not opts.allow_incomplete:
            raise TransferError(f"{bundle} is incomplete (its export did not finish); finish the export, "
                                "or pass --allow-incomplete to unpack what it holds")
        plans, notes = interop.unpack_plans(reader, list(images), parse_platforms(opts.platforms), oci is not None)
        interop.check_not_delta(reader, plans)
        interop.apply_prefix(plans, opts.prefix)
        if not plans:
            raise TransferError(f"nothing to write to {out}: " + "; ".join(notes or ["no images"]))
        for note in notes:
            (progress or NullProgress()).message(note)
        if oci:
            with OciLayout(oci, create=True) as layout:  # index.json written in batches
                stats = Copier(reader, layout, progress=progress).execute(plans)
        else:
            with DockerArchiveWriter(docker_archive or out) as writer:
                stats = Copier(reader, writer, progress=progress).execute(plans)
    names = interop.layout_names(out) if oci else [f"{p.dst_repo}:{t}" for p in plans for t in p.tags]
    return UnpackReport(**counts(stats, time.monotonic() - started), output=out,
                        format="oci" if oci else "docker-archive", names=names, notes=notes)


def verify(bundle: BundleIO, *, repair: bool = False, keys: Sequence[TrustedKey] = (),
           statement: str | None = None) -> VerifyReport:
    """Check every record, index and manifest graph of ``bundle`` (or of one part ``NAME.00N``);
    ``repair``: also rebuild a missing or damaged index. Problems are in the report (``ok``).
    ``"-"``, a binary stream or a FIFO is read once, front to back (nothing to repair there).

    ``keys``: trusted public keys; then every part read must be signed by one of them and its
    statement recomputed from the bundle must equal the signed one (a problem otherwise). The
    report's ``signature`` says whether the bundle is signed, by which keys, and if it was checked.
    ``statement``: write each part's signed statement to this path (a split set: ``PATH.00N``)
    and its signature to ``PATH.sig``, for ``openssl dgst -sha256 -verify KEY.pub -signature
    PATH.sig PATH``."""
    from transfer.bundle.verify import verify as verify_bundle, verify_stream
    trusted = _trusted(keys)
    stream = stream_input(bundle)
    if stream is not None:
        if repair:
            raise UsageError("--repair rewrites a bundle file; a stream cannot be repaired")
        if statement is not None:
            raise UsageError("--print-statement needs the bundle as a file")
        return verify_stream(*stream, keys=trusted)
    assert isinstance(bundle, str)
    report = verify_bundle(bundle)
    if repair and report.damaged_index:
        report.repaired_parts = rewrite_index(bundle)["parts"]
    _verify_signature(bundle, report, trusted, statement)
    return report


def _verify_signature(bundle: str, report: VerifyReport, trusted: list[PublicKey], statement: str | None) -> None:
    from transfer.bundle import signing
    from transfer.bundle.verify import Problem

    with BundleReader(bundle, recover=True) as reader:
        only = reader.path if reader.split and reader.path != reader.base else None
        checks = signing.inspect_bundle(reader, only)
    if not any(c.signed for c in checks) and not trusted:
        if statement is not None:
            raise SignatureError(f"{bundle}: not signed: there is no statement to print")
        return
    failed = False
    for check in checks:
        if trusted:
            try:
                signing.check_part(check, trusted)
            except SignatureError as exc:
                failed = True
                report.problems.append(Problem(digest=None, message=f"signature: {exc}"))
        elif check.problem and check.signed:
            report.notes.append(f"signature: {check.problem}")
    report.signature = signing.status(checks, checked=bool(trusted) and not failed)
    if statement is not None:
        _write_statements(statement, [c for c in checks if c.signed_statement is not None], len(checks) > 1)


def _write_statements(path: str, checks: list[Any], numbered: bool) -> None:
    for check in checks:
        name = f"{path}.{check.number:03d}" if numbered else path
        with open(name, "wb") as f:
            f.write(check.signed_statement)
        with open(name + ".sig", "wb") as f:
            f.write(check.signature)


def sign(bundle: str, key: SigningKey) -> SignReport:
    """Sign every part of the complete bundle ``bundle`` with ``key`` (a PEM private key path,
    or a ``transfer.keys.PrivateKey``), in place: each part's tail becomes its SIGNATURE record,
    a new INDEX and trailer; a signature already there is replaced (one signer per bundle). Holds
    the bundle's lock; a kill at any moment leaves a bundle that reads and can be signed again."""
    from transfer.bundle.signing import load_signing_key, sign_bundle

    if is_stream_path(bundle):
        raise UsageError(f"sign rewrites a bundle file in place, not a stream ({bundle}); sign while exporting: "
                         "export --sign KEY -o -")
    private = load_signing_key(key)
    parts, replaced = sign_bundle(bundle, private)
    return SignReport(bundle=bundle, parts=parts, key=private.fingerprint, algorithm=private.algorithm,
                      replaced=replaced)


def keygen(prefix: str, *, algorithm: str = ECDSA_P256, passphrase: bytes | None = None) -> KeygenReport:
    """Make a signing key pair: ``PREFIX.key`` (PKCS#8 PEM, mode 0600, encrypted when a
    ``passphrase`` is given) and ``PREFIX.pub`` (SubjectPublicKeyInfo PEM). ``algorithm``:
    ``"ecdsa-p256-sha256"`` (default; openssl and cosign verify it) or ``"ed25519"``. Neither
    file may exist."""
    from transfer.keys import generate

    private, public = f"{prefix}.key", f"{prefix}.pub"
    key = generate(private, public, algorithm=algorithm, passphrase=passphrase or None)
    return KeygenReport(private_key=private, public_key=public, algorithm=key.algorithm, fingerprint=key.fingerprint,
                        encrypted=bool(passphrase))


def recover(bundle: str, *, mark_complete: bool = False) -> RecoverReport:
    """Rebuild the index of a bundle whose index is missing or damaged (a crash, a full disk, a cut
    copy), keeping every complete record; the result is marked incomplete unless ``mark_complete``."""
    summary = rewrite_index(bundle, mark_complete=mark_complete)
    return RecoverReport(parts=summary["parts"], records=summary["records"], dropped_bytes=summary["dropped_bytes"],
                         problems=[str(p) for p in summary["problems"]])


def list_remote(location: str, *, tags: bool = False, access: RegistryAccess | None = None) -> RemoteListing:
    """The repositories of a registry (``HOST``; with ``tags`` every tag of each), or the tags of
    one repository (``HOST/REPO``), sorted."""
    target = RegistryPath.parse(location)
    with (access or RegistryAccess()).client(location) as client:
        if target.path:
            return RemoteListing(registry=target.registry, repository=target.path, tags=client.tags(target.path))
        repos = [RemoteRepository(name=r, tags=client.tags(r) if tags else None) for r in client.catalog()]
    return RemoteListing(registry=target.registry, repositories=repos)


@overload
def open_bundle(path: str) -> BundleReader: ...
@overload
def open_bundle(path: BinaryIO) -> BundleStream: ...


def open_bundle(path: str | BinaryIO) -> BundleReader | BundleStream:
    """A bundle to list and read: ``with transfer.open_bundle("site.bundle") as b: b.listing()``.
    An open binary stream (``sys.stdin.buffer``, a pipe) gives a ``BundleStream``, read once front
    to back: its ``listing()`` reads it to the end. A path is a bundle file or split set (for
    ``"-"`` or a FIFO, pass the open stream)."""
    if not isinstance(path, str):
        return BundleStream(path, str(getattr(path, "name", "<stream>")))
    if is_stream_path(path):
        raise UsageError(f"{path} is a stream, not a bundle file: pass the open stream (e.g. sys.stdin.buffer)")
    return BundleReader(path)
