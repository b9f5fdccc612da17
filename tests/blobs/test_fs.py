"""FileBlobStore: layout, idempotence, durability steps, ranges, ids, listing."""

import asyncio
import hashlib
import os
import time

import pytest

from mailserver.blobs.base import BlobNotFound, InvalidBlobId, blob_id_of, validate_blob_id
from mailserver.blobs.fs import FileBlobStore


@pytest.fixture
def store(tmp_path):
    return FileBlobStore(tmp_path / "blobs")


async def test_put_get_layout(store, tmp_path):
    data = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    blob_id = await store.put(data)
    assert blob_id == hashlib.sha256(data).hexdigest() == blob_id_of(data)
    path = tmp_path / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
    assert path.read_bytes() == data
    assert store.path(blob_id) == str(path)
    assert await store.get(blob_id) == data
    assert await store.exists(blob_id)
    assert await store.size(blob_id) == len(data)
    # no temp files left behind
    assert os.listdir(path.parent) == [blob_id]
    # empty blob is a blob too
    empty = await store.put(b"")
    assert await store.get(empty) == b"" and await store.size(empty) == 0


async def test_put_is_idempotent_and_touches(store):
    data = os.urandom(5000)
    blob_id = await store.put(data)
    path = store.path(blob_id)
    old = time.time() - 10 * 86400
    os.utime(path, (old, old))
    ino = os.stat(path).st_ino
    assert await store.put(data) == blob_id
    st = os.stat(path)
    assert st.st_ino == ino  # not rewritten
    assert st.st_mtime > time.time() - 60  # but touched, for the sweeper's grace
    # concurrent puts of the same content all succeed and leave one file
    ids = await asyncio.gather(*(store.put(b"same" * 1000) for _ in range(8)))
    assert len(set(ids)) == 1
    assert os.listdir(os.path.dirname(store.path(ids[0]))) == [ids[0]]


async def test_durability_syscalls(store, monkeypatch):
    """put fsyncs the file, then the directory (and new parents), before returning."""
    import mailserver.blobs.fs as fs

    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(("rename", dst))
        return real_replace(src, dst)

    monkeypatch.setattr(fs.os, "fsync", fsync)
    monkeypatch.setattr(fs.os, "replace", replace)
    blob_id = await store.put(b"durable")
    path = store.path(blob_id)
    leaf = os.path.dirname(path)
    kinds = [(k, os.path.basename(p) if k == "fsync" else p) for k, p in calls]
    # parents fsynced because ab/ and ab/cd/ were created; temp file fsynced before rename;
    # leaf directory fsynced after it
    assert ("fsync", os.path.basename(store.root)) in kinds
    assert ("fsync", blob_id[:2]) in kinds
    i_rename = kinds.index(("rename", path))
    assert kinds[i_rename - 1][0] == "fsync" and kinds[i_rename - 1][1].startswith(".tmp-")
    assert kinds[i_rename + 1] == ("fsync", os.path.basename(leaf))
    calls.clear()
    await store.put(b"durable")  # already there: only the directory entry is re-synced
    assert [k for k, _ in calls] == ["fsync"]


async def test_get_range(store):
    data = bytes(range(256)) * 10
    blob_id = await store.put(data)
    assert await store.get_range(blob_id, 0, 10) == data[:10]
    assert await store.get_range(blob_id, 100, 356) == data[100:356]
    assert await store.get_range(blob_id, 2500, 9999) == data[2500:]
    assert await store.get_range(blob_id, 5000, 6000) == b""
    assert await store.get_range(blob_id, 7, 7) == b""
    with pytest.raises(ValueError):
        await store.get_range(blob_id, 10, 5)
    with pytest.raises(ValueError):
        await store.get_range(blob_id, -1, 5)


async def test_missing_and_delete(store):
    missing = "0" * 64
    with pytest.raises(BlobNotFound):
        await store.get(missing)
    with pytest.raises(BlobNotFound):
        await store.get_range(missing, 0, 1)
    with pytest.raises(BlobNotFound):
        await store.size(missing)
    assert not await store.exists(missing)
    await store.delete(missing)  # not an error
    blob_id = await store.put(b"x")
    await store.delete(blob_id)
    assert not await store.exists(blob_id)
    with pytest.raises(BlobNotFound):
        await store.get(blob_id)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "A" * 64, "a" * 63,
                                 "a" * 65, "g" * 64, "", "ab/cd/" + "a" * 58,
                                 "..%2f" + "a" * 59, "a" * 63 + "\n", "a" * 64 + "/..", None])
async def test_invalid_ids_rejected(store, bad):
    with pytest.raises(InvalidBlobId):
        validate_blob_id(bad)
    for call in (store.get(bad), store.exists(bad), store.delete(bad), store.size(bad),
                 store.get_range(bad, 0, 1), store.delete_if_older(bad, 0)):
        with pytest.raises(InvalidBlobId):
            await call


async def test_iter_ids_skips_strays(store, tmp_path):
    ids = {await store.put(f"message {i}".encode()) for i in range(20)}
    some = next(iter(ids))
    leaf = os.path.dirname(store.path(some))
    open(os.path.join(leaf, ".tmp-crashed"), "wb").close()
    open(os.path.join(leaf, "README"), "wb").close()
    os.makedirs(tmp_path / "blobs" / "zz" / "yy")
    open(tmp_path / "blobs" / "lost+found", "wb").close()
    assert {i async for i in store.iter_ids()} == ids


async def test_delete_if_older(store):
    blob_id = await store.put(b"old mail")
    path = store.path(blob_id)
    now = time.time()
    assert not await store.delete_if_older(blob_id, now - 3600)  # recently put: kept
    assert await store.exists(blob_id)
    os.utime(path, (now - 7200, now - 7200))
    assert await store.delete_if_older(blob_id, now - 3600)
    assert not await store.exists(blob_id)
    assert not await store.delete_if_older(blob_id, now)  # already gone
    assert os.listdir(os.path.dirname(path)) == []  # no tombstone left


async def test_stale_temp_files(store):
    blob_id = await store.put(b"x")
    leaf = os.path.dirname(store.path(blob_id))
    stale = os.path.join(leaf, ".tmp-deadbeef-0001")
    fresh = os.path.join(leaf, ".tmp-deadbeef-0002")
    for p in (stale, fresh):
        open(p, "wb").close()
    os.utime(stale, (time.time() - 7200,) * 2)
    assert await store.remove_stale_temp_files(3600) == 1
    assert sorted(os.listdir(leaf)) == sorted([blob_id, os.path.basename(fresh)])
