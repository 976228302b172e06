"""Object stores keep the same guarantees on a local folder, in memory and on Cloud
Storage (fake-gcs-server through google-cloud-storage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resumable.errors import ObjectNotFoundError, PreconditionFailedError, StorageError
from resumable.storage import LocalStore, MemoryStore, ObjectStore, open_store


@pytest.fixture(params=["local", "memory", pytest.param("gcs", marks=pytest.mark.emulators)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path)
    if request.param == "memory":
        return MemoryStore()
    bucket = request.getfixturevalue("gcs_bucket")
    return open_store(f"gs://{bucket}/some/prefix")


def test_write_read_list_delete(store: ObjectStore) -> None:
    store.write("a/b/one", b"1")
    store.write("a/b/two", [b"t", memoryview(b"wo")])
    store.write("a/c", bytearray(b"c"))
    assert store.read("a/b/two") == b"two"
    assert bytes(store.read_buffer("a/c")) == b"c"
    assert list(store.list("a/b/")) == ["a/b/one", "a/b/two"]
    assert list(store.list("a/")) == ["a/b/one", "a/b/two", "a/c"]
    assert store.exists("a/c") and not store.exists("a/zzz")
    assert store.delete_prefix("a/b/") == 2
    assert list(store.list("a/")) == ["a/c"]
    store.delete("a/c")
    store.delete("a/c")  # deleting a missing object is not an error
    with pytest.raises(ObjectNotFoundError):
        store.read("a/c")
    assert store.stats.bytes_written == 5 and store.stats.objects_written == 3


def test_create_only_writes_lose_to_an_existing_object(store: ObjectStore) -> None:
    store.write("blob", b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailedError):
        store.write("blob", b"second", if_generation_match=0)
    assert store.read("blob") == b"first"


def test_a_write_conditional_on_a_stale_generation_loses(store: ObjectStore) -> None:
    generation = store.write("latest", b"v1")
    _, seen = store.read_with_generation("latest")
    assert seen == generation
    newer = store.write("latest", b"v2", if_generation_match=generation)
    with pytest.raises(PreconditionFailedError):
        store.write("latest", b"v3", if_generation_match=generation)
    assert store.read("latest") == b"v2"
    assert store.write("latest", b"v4", if_generation_match=newer)
    assert store.read("latest") == b"v4"


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/../b", "a//b", ""])
def test_unsafe_object_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StorageError, match="unsafe object name"):
        LocalStore(tmp_path).write(name, b"x")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for i in range(5):
        store.write("x/obj", f"{i}".encode())
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["obj"]


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("/tmp/x", LocalStore), ("file:///tmp/y", LocalStore), ("memory://t", MemoryStore)],
)
def test_open_store_understands_urls(spec: str, kind: type) -> None:
    assert isinstance(open_store(spec), kind)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("s3://bucket", "unsupported storage URL"), ("gs://", "names no bucket"), (42, "must be")],
)
def test_open_store_refuses_what_it_cannot_open(spec: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        open_store(spec)
