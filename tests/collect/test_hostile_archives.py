"""`codetune collect` on archives built to exhaust memory or to leave a link to a host file in the
cache: small on disk, members declaring hundreds of MiB. Peak memory stays bounded (the child's own
peak RSS, from wait4), the rest of each archive is collected, and no link in the cache leads out."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from test_collect_pipeline import distinct_module, write
from test_collect_sources import zeros_zip

from codetune.artifacts import read_corpus

HUGE = 128 << 20  # what each hostile member declares (and really holds, compressed to a few KiB)
MIB = 1 << 20


def run_collect(*args: str) -> tuple[int, str, float]:
    """`codetune collect ARGS` in a child process: (exit status, stderr, its peak RSS in MiB).

    The peak is the child's VmHWM, read while it runs: reset at exec, unlike wait4's ru_maxrss,
    which also counts this test process's pages that the child shared before exec.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "codetune", "collect", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    status = Path(f"/proc/{child.pid}/status")
    peak = 0
    while child.poll() is None:
        with contextlib.suppress(OSError):
            peak = max(
                [
                    peak,
                    *(
                        int(line.split()[1])
                        for line in status.read_text().splitlines()
                        if line.startswith("VmHWM:")
                    ),
                ]
            )
        time.sleep(0.02)
    return child.returncode, child.stderr.read().decode(), peak / 1024


def gzip_members(*parts: bytes | tuple[bytes, int]) -> bytes:
    """A gzip file of several members (readers join them): ``(block, n)`` is ``block`` n times over,
    compressed once and repeated, so hundreds of MiB cost a few KiB and no time."""
    out = b""
    for part in parts:
        block, times = part if isinstance(part, tuple) else (part, 1)
        out += gzip.compress(block, compresslevel=9) * times
    return out


def header(name: str, kind: bytes, size: int, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info.tobuf(tarfile.GNU_FORMAT)


def file_member(name: str, text: str) -> bytes:
    data = text.encode()
    return header(name, tarfile.REGTYPE, len(data)) + data + bytes(-len(data) % 512)


def sparse_member(name: str, map_blocks: int) -> bytes:
    """An old-GNU sparse member whose map goes on for ``map_blocks`` extension blocks of 21 holes (a
    multiple of 2048: 1 MiB of blocks is compressed once and repeated)."""
    info = bytearray(header(name, tarfile.GNUTYPE_SPARSE, 0))
    info[482] = 1  # isextended: the map goes on in the blocks that follow
    info[148:156] = b" " * 8
    info[148:156] = b"%06o\0 " % sum(info)  # the header's checksum, over the patched block
    more = bytearray(512)
    for i in range(21):
        more[i * 24 : i * 24 + 24] = b"%011o\0%011o\0" % (i * 1024 + 512, 512)
    more[504] = 1
    last = bytes(more[:504]) + bytes(8)
    per_mib = MIB // 512
    return gzip_members(
        bytes(info), (bytes(more) * per_mib, map_blocks // per_mib - 1), bytes(more) * (per_mib - 1) + last
    )


def hostile_tar(path: Path) -> None:
    """Each hostile member is followed by a normal one, which must still be collected."""
    path.write_bytes(
        gzip_members(
            file_member("src/first.py", distinct_module(1)),
            header("././@PaxHeader", tarfile.XHDTYPE, HUGE),
            (bytes(MIB), HUGE // MIB),  # a 128 MiB pax header
            file_member("src/pax_target.py", distinct_module(2)),
            file_member("src/after_pax.py", distinct_module(3)),
            header("././@LongLink", tarfile.GNUTYPE_LONGNAME, HUGE),
            (b"n" * MIB, HUGE // MIB),  # a 128 MiB file name
            file_member("src/long_named.py", distinct_module(4)),
            header("././@LongLink", tarfile.GNUTYPE_LONGLINK, HUGE),
            (b"t" * MIB, HUGE // MIB),  # a 128 MiB link target
            header("src/long_link.py", tarfile.SYMTYPE, 0, "first.py"),
            file_member("src/after_links.py", distinct_module(5)),
        )
        + sparse_member("src/holes.py", (16 << 20) // 512)  # a 16 MiB sparse map (688,128 holes)
        + gzip_members(file_member("src/after_holes.py", distinct_module(6)), bytes(1024))
    )


def links_leaving(folder: Path) -> list[str]:
    root = os.path.realpath(folder)
    return [
        str(p)
        for p in folder.rglob("*")
        if p.is_symlink() and not (os.path.realpath(p) + os.sep).startswith(root + os.sep)
    ]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc")
def test_members_declaring_huge_sizes_are_skipped_unread(tmp_path):
    tar_path, zip_path = tmp_path / "hostile.tar.gz", tmp_path / "hostile.zip"
    hostile_tar(tar_path)
    # a symlink whose "target" (its data) is 128 MiB
    zeros_zip(zip_path, {"z/ok.py": distinct_module(7).encode()}, "z/link.py", size=HUGE, zeros_mode=0o120777)
    assert tar_path.stat().st_size + zip_path.stat().st_size < 2 * MIB  # for 528 MiB declared
    cache, out = tmp_path / "cache", tmp_path / "corpus"
    code, err, peak = run_collect(
        str(tar_path), str(zip_path), "-l", "python", "-o", str(out), f"--set=cache_dir={cache}"
    )
    assert code == 0, err
    # About 140 MiB collect a few files here; the code before read each such member whole (x1 to x5)
    assert peak < 200, f"peak RSS {peak:.0f} MiB for archives whose members declare {HUGE >> 20} MiB each"
    paths = sorted(r["path"] for r in read_corpus(out))
    assert paths == [
        "src/after_holes.py",
        "src/after_links.py",
        "src/after_pax.py",
        "src/first.py",
        "z/ok.py",
    ], paths
    dropped = json.loads((out / "manifest.json").read_text())["counts"]["dropped"]
    assert dropped["bad_member"]["files"] == 5, dropped  # pax, long name, long link, sparse, zip link
    assert links_leaving(cache) == []


def test_a_link_chain_through_folders_made_later_is_removed(tmp_path):
    """``x.py -> p/q/r/s/a/../../../../HOST`` stays inside while ``a`` does not exist; once the later
    member ``p/q/r/s/a -> ../../../..`` is a link, x.py points four folders above the unpacked root."""
    secret = write(tmp_path / "host", "secret.py", distinct_module(8) + "\n# HOST SECRET\n")
    path = tmp_path / "chain.tar"
    with tarfile.open(path, "w") as archive:
        data = distinct_module(9).encode()
        info = tarfile.TarInfo("ok.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        # cache/archives/<name>/ is the unpacked root: four folders up is tmp_path's parent
        for name, target in (
            ("x.py", f"p/q/r/s/a/../../../../{tmp_path.name}/host/secret.py"),
            ("p/q/r/s/a", "../../../.."),
        ):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            archive.addfile(link)
    cache, out = tmp_path / "cache", tmp_path / "corpus"
    code, err, _ = run_collect(str(path), "-l", "python", "-o", str(out), f"--set=cache_dir={cache}")
    assert code == 0, err
    assert links_leaving(cache) == [], "a link in the cache leads out of it"
    assert [r["path"] for r in read_corpus(out)] == ["ok.py"]
    assert "HOST SECRET" not in "".join(r["content"] for r in read_corpus(out))
    assert secret.is_file()
    dropped = json.loads((out / "manifest.json").read_text())["counts"]["dropped"]
    assert dropped["link_outside"]["files"] >= 1, dropped
