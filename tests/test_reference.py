import pytest

from transfer.errors import InvalidReferenceError
from transfer.reference import Reference, RegistryPath

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, registry, repo, tag, digest, endpoint",
    [
        ("nginx", "docker.io", "library/nginx", "latest", None, "registry-1.docker.io"),
        ("docker.io/nginx:1.25", "docker.io", "library/nginx", "1.25", None, "registry-1.docker.io"),
        ("user/app", "docker.io", "user/app", "latest", None, "registry-1.docker.io"),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None, "localhost:5000"),
        ("localhost/x:t", "localhost", "x", "t", None, "localhost"),
        ("192.168.2.241:5000/user241:v1.0", "192.168.2.241:5000", "user241", "v1.0", None, "192.168.2.241:5000"),
        (f"reg.example:443/a/b/c@{DIGEST}", "reg.example:443", "a/b/c", None, DIGEST, "reg.example:443"),
        (f"reg.example/a:t@{DIGEST}", "reg.example", "a", "t", DIGEST, "reg.example"),
        ("[::1]:5000/a", "[::1]:5000", "a", "latest", None, "[::1]:5000"),
    ],
)
def test_parse(text, registry, repo, tag, digest, endpoint):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.endpoint) == (registry, repo, tag, digest, endpoint)


def test_round_trip_str():
    assert str(Reference.parse("nginx")) == "docker.io/library/nginx:latest"
    assert str(Reference.parse(f"h:1/a@{DIGEST}")) == f"h:1/a@{DIGEST}"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("localhost:5000/Upper", "'Upper'"),
        ("localhost:5000/x:bad tag", "'bad tag'"),
        ("localhost:5000/x:-t", "'-t'"),
        ("localhost:5000/x@sha256:1234", "sha256:1234"),
        ("localhost:5000/x@md5:" + "a" * 32, "md5"),
        ("localhost:5000/a..b", "'a..b'"),
        ("", "empty"),
        ("bad_host!:5000/x", "bad_host"),
        ("localhost:5000/" + "a" * 300, "255"),
    ],
)
def test_invalid_names_the_bad_part(text, needle):
    with pytest.raises(InvalidReferenceError) as exc:
        Reference.parse(text)
    assert needle in str(exc.value)


def test_upper_case_repository_says_lower_case():
    with pytest.raises(InvalidReferenceError, match="lower case"):
        Reference.parse("localhost:5000/MyApp")


def test_registry_path():
    assert RegistryPath.parse("localhost:5000") == RegistryPath("localhost:5000", "")
    assert RegistryPath.parse("localhost:5000/team/x/") == RegistryPath("localhost:5000", "team/x")
    assert RegistryPath.parse("docker.io/library/nginx").endpoint == "registry-1.docker.io"
    with pytest.raises(InvalidReferenceError):
        RegistryPath.parse("localhost:5000/Bad")
