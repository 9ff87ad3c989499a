"""The bucket side of the model store (`model_store = "s3://bucket/prefix"`, docs/scale-out.md): where
published versions live when several replicas on several hosts serve the same ones. serving/versions.py
decides when to publish, fetch or delete; this module owns the layout in the bucket and the transfers:

    prefix/
      blobs/<sha256>              every file of every version, stored once by its content: a file that
                                  another version already has is not uploaded again
      versions/<name>.json        a version's manifest: {"format", "version", "meta", "published",
                                  "files": {relative path: {"sha256", "size"}}}, written after its blobs
      promotions/<ns>-<name>.json one object per promotion: {"time", "champion", "previous", "reason"}
      CHAMPION                    the served version's name, written last: a reader never sees a version
                                  whose blobs or manifest are missing

A fetch assembles the version in a folder the caller renames into place, and checks the sha256 and
size of every file against the manifest before it returns (`BlobMismatch` otherwise: nothing is
kept). boto3 is imported here only, when a store is set; it reads its standard variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION). Every failure of the
store reaches the user as one line (`ModelStoreError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

from core.errors import UserError
from core.runtime import thread_pool
from core.settings import model_store_location

MANIFEST_FORMAT = 1
TRANSFER_THREADS = 8  # blobs sent or received side by side (the store's latency, not the CPU, bounds them)
PARTS_PER_BLOB = 4  # parts of one large blob sent or received side by side (boto3's multipart transfers)
# An unreferenced blob younger than this may belong to a version another host is publishing right now
# (its manifest comes after its blobs): garbage collection leaves it for a later prune.
ORPHAN_GRACE = timedelta(hours=1)
_MISSING = ("NoSuchKey", "404", "NotFound")
_MOVED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")  # a conditional write lost
_NO_CONDITIONS = ("NotImplemented", "501", "InvalidArgument", "InvalidRequest", "ParamValidation")


class ModelStoreError(UserError):
    """The model store could not be read or written (unreachable, no credentials, no such bucket, ...);
    `code` is the store's error code when it answered."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class BlobMismatch(ModelStoreError):
    """A fetched file does not match its manifest (tampered with or damaged): the version is refused."""


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def folder_manifest(folder: Path) -> dict[str, dict]:
    """{relative path: {"sha256", "size"}} of every file under `folder`."""
    files = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            files[path.relative_to(folder).as_posix()] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return files


class ModelBucket:
    """One `s3://bucket/prefix` (a client made at the first call; thread-safe like boto3's clients)."""

    def __init__(self, url: str):
        self.url = str(url).strip()
        self.bucket, self.prefix = model_store_location(self.url)
        self._client = None
        self._client_lock = threading.Lock()

    # ----- keys and calls --------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = self._call("connect", _make_client)
            return self._client

    def _call(self, what: str, fn, *args, missing_ok: bool = False, **kwargs):
        """fn(*args, **kwargs), its failures turned into one ModelStoreError line (None for a missing
        key when `missing_ok`)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if missing_ok and code in _MISSING:
                return None
            raise ModelStoreError(self._client_error(what, code, error.get("Message") or str(exc)), code) from exc
        except ParamValidationError as exc:  # e.g. a botocore that predates conditional writes
            raise ModelStoreError(f"the model store {self.url} failed to {what}: {exc}", "ParamValidation") from exc
        except NoCredentialsError as exc:
            raise ModelStoreError(f"no credentials for the model store {self.url}: set AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY") from exc
        except BotoCoreError as exc:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
            raise ModelStoreError(f"cannot reach the model store {self.url} at {endpoint} ({what}): "
                                  f"{' '.join(str(exc).split())}") from exc

    def _client_error(self, what: str, code: str, message: str) -> str:
        if code == "NoSuchBucket":
            return f"the model store's bucket {self.bucket!r} does not exist ({self.url}); create it first"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"the model store {self.url} refused access ({what}): {code} {' '.join(message.split())}"
        return f"the model store {self.url} failed to {what}: {code} {' '.join(message.split())}"

    def _get_bytes(self, key: str, what: str) -> tuple[bytes, dict] | None:
        """(body, head fields) of one object, None when it is not there."""
        reply = self._call(what, self.client.get_object, Bucket=self.bucket, Key=key, missing_ok=True)
        if reply is None:
            return None
        return self._call(what, reply["Body"].read), reply

    def _put_bytes(self, key: str, body: bytes, what: str, **extra) -> dict:
        return self._call(what, self.client.put_object, Bucket=self.bucket, Key=key, Body=body, **extra)

    def _list(self, folder: str) -> list[dict]:
        """Every object under prefix/folder/ ({"Key", "Size", "LastModified", ...})."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(folder) + "/")
        return self._call(f"list {folder}", lambda: [obj for page in pages for obj in page.get("Contents", [])])

    def _delete(self, keys: list[str], what: str) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            reply = self._call(what, self.client.delete_objects, Bucket=self.bucket,
                               Delete={"Objects": batch, "Quiet": True})
            if reply and reply.get("Errors"):
                first = reply["Errors"][0]
                raise ModelStoreError(f"the model store {self.url} failed to {what}: {first.get('Key')}: "
                                      f"{first.get('Code')} {first.get('Message')}")

    # ----- the champion pointer --------------------------------------------------------------
    def champion(self) -> tuple[str | None, str | None]:
        """(the served version's name, its pointer's ETag), (None, None) before the first promotion."""
        got = self._get_bytes(self.key("CHAMPION"), "read the champion pointer")
        if got is None:
            return None, None
        body, reply = got
        return body.decode("utf-8").strip() or None, reply.get("ETag")

    def champion_stamp(self) -> tuple | None:
        """A cheap change detector for hot reload: one HEAD of the pointer (its ETag and time; a
        re-promotion of the same version changes the time)."""
        reply = self._call("read the champion pointer", self.client.head_object, Bucket=self.bucket,
                           Key=self.key("CHAMPION"), missing_ok=True)
        if reply is None:
            return None
        return ("s3", reply.get("ETag"), str(reply.get("LastModified")), reply.get("VersionId"))

    def set_champion(self, name: str, *, etag: str | None, expect_present: bool) -> bool:
        """Point CHAMPION at `name` only if the pointer is still the one read (its `etag`, or absent when
        not `expect_present`), where the store takes conditional writes; returns False when another
        writer moved it first. A store without conditional writes gets a plain write (the caller's
        compare and the writer lock guard it then)."""
        body = (name + "\n").encode()
        condition = ({"IfMatch": etag} if etag else {}) if expect_present else {"IfNoneMatch": "*"}
        if condition:
            try:
                self._put_bytes(self.key("CHAMPION"), body, "move the champion pointer", **condition)
                return True
            except ModelStoreError as exc:
                if exc.code in _MOVED:
                    return False
                if exc.code not in _NO_CONDITIONS:
                    raise
        self._put_bytes(self.key("CHAMPION"), body, "move the champion pointer")
        return True

    def record_promotion(self, entry: dict) -> str:
        key = self.key("promotions", f"{time.time_ns():020d}-{entry['champion']}.json")
        self._put_bytes(key, json.dumps(entry).encode(), "record a promotion")
        return key

    def forget_promotion(self, key: str) -> None:
        self._delete([key], "remove a promotion record")

    def history(self) -> list[dict]:
        """Every promotion, oldest first."""
        keys = sorted(obj["Key"] for obj in self._list("promotions"))
        bodies = list(thread_pool("model-store", TRANSFER_THREADS).map(
            lambda k: self._get_bytes(k, "read the promotion history"), keys))
        return [json.loads(got[0]) for got in bodies if got is not None]

    # ----- versions --------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The published versions (unsorted)."""
        return [PurePosixPath(obj["Key"]).stem for obj in self._list("versions") if obj["Key"].endswith(".json")]

    def has(self, name: str) -> bool:
        return self._call("look up a version", self.client.head_object, Bucket=self.bucket,
                          Key=self.key("versions", f"{name}.json"), missing_ok=True) is not None

    def manifest(self, name: str) -> dict | None:
        got = self._get_bytes(self.key("versions", f"{name}.json"), f"read the manifest of {name}")
        if got is None:
            return None
        try:
            manifest = json.loads(got[0])
            _check_paths(manifest["files"])
            return manifest
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(f"the model store's manifest of {name} is unreadable: {exc}") from exc

    def manifests(self, names: list[str]) -> dict[str, dict]:
        """{name: manifest} of the given published versions, read side by side."""
        found = dict(zip(names, thread_pool("model-store", TRANSFER_THREADS).map(self.manifest, names)))
        return {name: manifest for name, manifest in found.items() if manifest is not None}

    def publish(self, name: str, folder: Path, meta: dict) -> dict:
        """Upload the blobs the store lacks, then the manifest (the version exists for readers only once
        its manifest does). Returns {"version", "files", "bytes", "uploaded_blobs", "uploaded_bytes",
        "manifest"}."""
        files = folder_manifest(folder)
        stored = {PurePosixPath(obj["Key"]).name for obj in self._list("blobs")}
        todo: dict[str, Path] = {}
        for rel, entry in files.items():
            if entry["sha256"] not in stored:
                todo.setdefault(entry["sha256"], Path(folder) / rel)

        def upload(item):
            sha, path = item
            self._call(f"upload {path.name} of {name}", self.client.upload_file, str(path), self.bucket,
                       self.key("blobs", sha), Config=_transfer_config())

        list(thread_pool("model-store", TRANSFER_THREADS).map(upload, todo.items()))
        manifest = {"format": MANIFEST_FORMAT, "version": name, "meta": meta, "files": files,
                    "published": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._put_bytes(self.key("versions", f"{name}.json"), json.dumps(manifest, sort_keys=True).encode(),
                        f"write the manifest of {name}")
        return {"version": name, "files": len(files), "bytes": sum(e["size"] for e in files.values()),
                "uploaded_blobs": len(todo), "uploaded_bytes": sum(p.stat().st_size for p in todo.values()),
                "manifest": manifest}

    def fetch(self, manifest: dict, target: Path, have: dict[str, Path]) -> dict:
        """Assemble the version of `manifest` in `target`: a file whose sha256 is in `have` (a local
        copy already checked) is hard-linked from there, the others downloaded; then every file is
        checked against the manifest. Returns {"files", "bytes", "downloaded_blobs", "downloaded_bytes"}."""
        name, files = manifest["version"], manifest["files"]
        wanted: dict[str, list[Path]] = {}
        for rel, entry in files.items():
            dest = Path(target) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = have.get(entry["sha256"])
            if source is None or not _link(source, dest):
                wanted.setdefault(entry["sha256"], []).append(dest)

        def download(item):
            sha, dests = item
            self._call(f"download {dests[0].name} of {name}", self.client.download_file, self.bucket,
                       self.key("blobs", sha), str(dests[0]), Config=_transfer_config())
            for dest in dests[1:]:
                _link(dests[0], dest) or shutil.copyfile(dests[0], dest)

        list(thread_pool("model-store", TRANSFER_THREADS).map(download, wanted.items()))
        _verify(name, target, files, self.key("blobs"))
        return {"files": len(files), "bytes": sum(e["size"] for e in files.values()),
                "downloaded_blobs": len(wanted),
                "downloaded_bytes": sum(files_size(files, sha) for sha in wanted)}

    def delete_versions(self, names: list[str]) -> None:
        self._delete([self.key("versions", f"{name}.json") for name in names], "delete versions")

    def collect_garbage(self, released: set[str]) -> dict:
        """Delete the blobs no published manifest references: those of `released` (blobs of versions
        just deleted) at once, other unreferenced ones once older than ORPHAN_GRACE (a crashed
        publish's). Returns {"blobs", "bytes"} deleted."""
        referenced = set()
        for manifest in self.manifests(self.names()).values():
            referenced.update(entry["sha256"] for entry in manifest["files"].values())
        cutoff = datetime.now(timezone.utc) - ORPHAN_GRACE
        doomed = [obj for obj in self._list("blobs")
                  if PurePosixPath(obj["Key"]).name not in referenced
                  and (PurePosixPath(obj["Key"]).name in released or obj["LastModified"] < cutoff)]
        self._delete([obj["Key"] for obj in doomed], "delete unreferenced blobs")
        return {"blobs": len(doomed), "bytes": sum(obj["Size"] for obj in doomed)}

    def stored_bytes(self) -> int:
        """Bytes of every blob in the store (each file once)."""
        return sum(obj["Size"] for obj in self._list("blobs"))


def files_size(files: dict[str, dict], sha: str) -> int:
    return next(entry["size"] for entry in files.values() if entry["sha256"] == sha)


def _make_client():
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # the runtime dependency is missing from this environment
        raise ModelStoreError(f"model_store is set but boto3 cannot be imported ({exc}); pip install boto3") from exc
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=TRANSFER_THREADS * (PARTS_PER_BLOB + 1))
    return boto3.session.Session().client("s3", config=config)


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(max_concurrency=PARTS_PER_BLOB)


def _check_paths(files: dict) -> None:
    """A manifest's paths stay inside the version folder (no absolute paths, no `..`)."""
    for rel, entry in files.items():
        path = PurePosixPath(rel)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"path {rel!r} leaves the version folder")
        if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("size"), int):
            raise ValueError(f"{rel!r} has no sha256 and size")


def _link(source: Path, dest: Path) -> bool:
    try:
        os.link(source, dest)
        return True
    except OSError:
        return False


def _verify(name: str, target: Path, files: dict[str, dict], blobs: str) -> None:
    for rel, entry in files.items():
        path = Path(target) / rel
        size = path.stat().st_size
        digest = file_sha256(path) if size == entry["size"] else None
        if digest != entry["sha256"]:
            found = f"sha256 {digest[:12]}…" if digest else f"{size} bytes"
            raise BlobMismatch(f"model version {name}: {rel} ({blobs}/{entry['sha256'][:12]}…) has {found}, not "
                               f"the manifest's {entry['sha256'][:12]}… ({entry['size']} bytes); the version was "
                               f"refused and nothing of it was cached")
