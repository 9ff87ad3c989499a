"""Benchmarks for the model store (`model_store = s3://bucket/prefix`, docs/scale-out.md).

    .venv/bin/python benchmarks/bench_model_store.py                  # moto's server on loopback
    .venv/bin/python benchmarks/bench_model_store.py --endpoint URL   # another S3-compatible store
                                                                       # (AWS_* variables set, bucket made)

1. Publish: the champion of a home built from the demo KB (default settings: fine-tuned encoder, ONNX
   exports; not timed) uploaded to an empty prefix (hash every file, list the blobs, upload, write
   the manifest), and again when the store already has every blob (a version republished: hashing
   and one listing only).
2. Fetch, a cold start: the same version into an empty CSBOT_HOME/models (manifest, downloads, every
   sha256 checked, fsync, renamed into place).
   The floor for both, measured in the same run: a local copy of the same folder (copytree + fsync).
3. Bytes: five versions (the demo KB, then one article more each time, built like `csbot ingest`
   builds them; not timed) stored by content, against the same five as plain folders (and against
   the local folders, where builds hard-link unchanged exports).

Each time is the median of --repeat runs; every run publishes to a new prefix. The store's server runs
on this machine, so the figures measure csbot's side (hashing, requests, checks), not a network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from demo_home import bench_home  # noqa: E402
from core.settings import Settings  # noqa: E402
from serving.model_store import ModelBucket  # noqa: E402
from serving.versions import VersionStore, folder_bytes, freed_by_removing  # noqa: E402

BUCKET = "csbot-bench"
EXTRA_ARTICLES = [
    ("gift-wrapping", "# Gift wrapping\n\nWe wrap any order for 2 euro; tick 'gift wrap' at checkout.\n"),
    ("vouchers", "# Gift vouchers\n\nBuy a voucher under **Account → Vouchers**; it is valid for two years.\n"),
    ("student-discount", "# Student discount\n\nStudents get 10 % off with a verified university e-mail address.\n"),
    ("price-match", "# Price match\n\nFound it cheaper within 7 days of buying? Send us the link and we refund "
                    "the difference.\n"),
]


def start_moto(workdir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(workdir / "moto.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return proc, url
        except urllib.error.HTTPError:
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto_server did not start (see {log.name})")
            time.sleep(0.2)


def set_aws(endpoint: str) -> None:
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
        os.environ.setdefault(name, value)


def copy_floor(folder: Path, target: Path) -> float:
    """Seconds to copy `folder` to `target` on this disk, durably (the floor of a publish and a fetch)."""
    start = time.perf_counter()
    shutil.copytree(folder, target)
    for path in target.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    seconds = time.perf_counter() - start
    shutil.rmtree(target)
    return seconds


def bench_transfer(home: Path, workdir: Path, repeat: int) -> dict:
    """Publish (cold and all blobs present) and fetch (cold start) of the home's champion, and the floor."""
    local = VersionStore(home / "models")
    name = local.champion_name()
    folder = local.get(name).path
    floors, cold, warm, fetches = [], [], [], []
    for r in range(repeat):
        floors.append(copy_floor(folder, workdir / f"copy-{r}"))
        bucket = ModelBucket(f"s3://{BUCKET}/publish-{r}-{time.time_ns()}")
        versions = VersionStore(home / "models", bucket)
        start = time.perf_counter()
        report = versions.publish(name)
        cold.append(time.perf_counter() - start)
        bucket.delete_versions([name])  # the manifest only: every blob stays
        start = time.perf_counter()
        again = versions.publish(name)
        warm.append(time.perf_counter() - start)
        assert again["uploaded_blobs"] == 0, again
        cache = workdir / f"replica-{r}" / "models"
        start = time.perf_counter()
        VersionStore(cache, bucket).get(name)
        fetches.append(time.perf_counter() - start)
        shutil.rmtree(cache.parent)
    return {"version": name, "files": report["files"], "bytes": report["bytes"],
            "floor_copy_s": _median(floors), "publish_s": _median(cold), "republish_s": _median(warm),
            "fetch_s": _median(fetches), "runs": {"floor": _rounded(floors), "publish": _rounded(cold),
                                                  "republish": _rounded(warm), "fetch": _rounded(fetches)}}


def bench_bytes(home: Path, workdir: Path) -> dict:
    """Five versions stored by content against the same five as plain folders."""
    from training.ingest import ingest

    settings = Settings.load(env={}, home=home)
    for slug, text in EXTRA_ARTICLES:
        article = workdir / "articles" / f"{slug}.md"
        article.parent.mkdir(exist_ok=True)
        article.write_text(text)
        print(f"building a version with {slug} (not timed)...", file=sys.stderr)
        ingest([article], settings)
    local = VersionStore(home / "models")
    names = local.names()[-(len(EXTRA_ARTICLES) + 1):]
    bucket = ModelBucket(f"s3://{BUCKET}/five-{time.time_ns()}")
    versions = VersionStore(home / "models", bucket)
    for name in names:
        versions.publish(name)
    folders = [local.get(n).path for n in names]
    return {"versions": names, "plain_bytes": sum(folder_bytes(f) for f in folders),
            "local_disk_bytes": freed_by_removing(folders), "stored_bytes": bucket.stored_bytes(),
            "per_version_bytes": [folder_bytes(f) for f in folders]}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="a CSBOT_HOME with a champion (default: ingest the demo KB, not timed); "
                                       "the bytes benchmark adds four versions to it")
    parser.add_argument("--endpoint", help="an S3-compatible endpoint (default: start moto_server on loopback)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["transfer", "bytes"])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="csbot-bench-store-"))
    proc = None
    try:
        if args.endpoint:
            set_aws(args.endpoint)
        else:
            proc, endpoint = start_moto(workdir)
            set_aws(endpoint)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        home = bench_home(args.home, workdir)
        results = {}
        if args.only in (None, "transfer"):
            print("publish and fetch ...", file=sys.stderr)
            results["transfer"] = bench_transfer(home, workdir, args.repeat)
        if args.only in (None, "bytes"):
            results["bytes"] = bench_bytes(home, workdir)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    report(results)
    return 0


def report(results: dict) -> None:
    if "transfer" in results:
        t = results["transfer"]
        floor = t["floor_copy_s"]
        print(f"version {t['version']}: {t['files']} files, {t['bytes'] / 1e6:.0f} MB")
        print(f"  local copy (floor, copytree + fsync): {floor:.2f} s")
        print(f"  publish to an empty prefix:           {t['publish_s']:.2f} s ({t['publish_s'] / floor:.1f}x the floor)")
        print(f"  publish, every blob already stored:   {t['republish_s']:.2f} s ({t['republish_s'] / floor:.1f}x)")
        print(f"  fetch into an empty cache (cold):     {t['fetch_s']:.2f} s ({t['fetch_s'] / floor:.1f}x)")
        print(f"  runs: {t['runs']}")
    if "bytes" in results:
        b = results["bytes"]
        print(f"{len(b['versions'])} versions: stored by content {b['stored_bytes'] / 1e6:.0f} MB; as plain folders "
              f"{b['plain_bytes'] / 1e6:.0f} MB ({b['stored_bytes'] / b['plain_bytes']:.0%}); the local folders with "
              f"hard-linked exports {b['local_disk_bytes'] / 1e6:.0f} MB")
        print(f"  per version: {[round(x / 1e6) for x in b['per_version_bytes']]} MB")


if __name__ == "__main__":
    raise SystemExit(main())
