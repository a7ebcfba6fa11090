"""Shared fixtures: real docker-registry processes, skopeo, generated sample images.

- ``registry`` (session): plain HTTP, seeded once with ``sample_set``; treat it as read-only.
- ``tls_registry`` / ``token_registry`` (session): htpasswd+TLS and token auth, seeded the same.
- ``seeded`` (session): ``{ref: Seeded(repo, tag, manifest)}`` of what those three hold.
- ``sample_layout`` (session): ``(Layout, {ref: Manifest})`` of the sample set on disk.
- ``fresh_registry`` (function): factory ``fresh_registry(mode="plain", **opts) -> Registry``,
  empty, stopped at teardown. ``opts`` go to ``Registry`` (tls, users, relative_urls, config,
  and for token mode grants, anonymous_pull, valid_for, expires_in, oauth_post).
- ``skopeo`` (session): a ``Skopeo`` runner.
- ``fault_proxy`` (function): factory ``fault_proxy(registry) -> FaultProxy`` (plain HTTP only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.bed.images import Layout, Manifest, sample_set
from tests.bed.proxy import FaultProxy
from tests.bed.registry import Registry
from tests.bed.skopeo import Seeded, Skopeo, seed_sample_set


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture(scope="session")
def sample_layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, dict[str, Manifest]]:
    return sample_set(tmp_path_factory.mktemp("sample-layout"))


def _seeded_registry(tmp_path_factory, skopeo, sample_layout, mode: str) -> Iterator[Registry]:
    registry = Registry(tmp_path_factory.mktemp(f"registry-{mode}"), mode)
    try:
        registry.start()
        registry.seeded = seed_sample_set(skopeo, registry, *sample_layout)
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory, skopeo, sample_layout) -> Iterator[Registry]:
    yield from _seeded_registry(tmp_path_factory, skopeo, sample_layout, "plain")


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory, skopeo, sample_layout) -> Iterator[Registry]:
    yield from _seeded_registry(tmp_path_factory, skopeo, sample_layout, "htpasswd")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory, skopeo, sample_layout) -> Iterator[Registry]:
    yield from _seeded_registry(tmp_path_factory, skopeo, sample_layout, "token")


@pytest.fixture(scope="session")
def seeded(registry: Registry) -> dict[str, Seeded]:
    return registry.seeded


@pytest.fixture
def fresh_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Registry]]:
    started: list[Registry] = []

    def start(mode: str = "plain", **opts) -> Registry:
        registry = Registry(tmp_path_factory.mktemp(f"fresh-{mode}"), mode, **opts)
        started.append(registry)
        return registry.start()

    try:
        yield start
    finally:
        for registry in started:
            registry.stop()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[Registry], FaultProxy]]:
    """Factory: ``fault_proxy(registry) -> FaultProxy`` in front of a plain registry, stopped at
    teardown."""
    started: list[FaultProxy] = []

    def start(registry: Registry) -> FaultProxy:
        if registry.tls:
            raise ValueError("the fault proxy forwards plain HTTP only")
        proxy = FaultProxy(registry.host)
        started.append(proxy)
        return proxy.start()

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


@pytest.fixture(autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upload journals and other state of the commands under test go to a temporary folder,
    never to the user's ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
