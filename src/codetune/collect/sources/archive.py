"""Archives (.zip, .tar.*), unpacked once into the cache with bounds checked while unpacking.

Every member is judged alone: a name that escapes the folder, a device, or a link pointing outside
is skipped and counted, and so is a member the filesystem refuses (a 300-character name, a file where
a folder should be). Members larger than ``max_bytes`` are never written (they would be dropped as
``too_large``). The whole archive is refused, leaving nothing in the cache, when it unpacks to more
than ``max_unpack_bytes`` or ``max_unpack_files``.

Memory stays bounded whatever a member declares: names and link targets longer than
``MAX_NAME_BYTES`` and tar's extended headers (pax, GNU long names, GNU sparse maps) larger than
``MAX_HEADER_BYTES`` are skipped unread, file members are copied in blocks, and links are checked
again once the whole archive is unpacked, on the paths they really resolve to (a link through a
folder that a later member turns into a link is only seen then).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from codetune.collect.sources import Source, cache_root, register_source, repo_name
from codetune.errors import InputError

log = logging.getLogger(__name__)
MARKER = ".codetune-skipped.json"
# Errors that concern one member's name or place, not the disk: skip that member and go on.
_MEMBER_ERRNOS = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EINVAL, errno.EILSEQ}
MAX_NAME_BYTES = 4096  # PATH_MAX: a longer name or link target is never a real one
MAX_HEADER_BYTES = 1 << 20  # a pax header holds a path, times and ids: real ones are under a few KiB


class UnpackLimitError(Exception):
    """The archive unpacks to more than the configured bounds."""


@dataclass
class Unpacker:
    """Writes members into ``dest`` one by one, checking each name and the running totals."""

    dest: Path
    max_bytes: int  # largest member written
    max_total: int
    max_files: int
    wanted: Callable[[str], bool]  # whether a skipped member would have been collected (for counts)
    written: int = 0
    members: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    links: list[tuple[str, str]] = field(default_factory=list)  # created last, after every file

    def place(self, name: str) -> Path | None:
        """The path for the next member, or None (counted) when its name would leave the folder."""
        self.count()
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            self.skipped["bad_member"] += 1
            return None
        return self.inside(name)

    def count(self) -> None:
        """One more member read, bounded by ``max_unpack_files``."""
        self.members += 1
        if self.members > self.max_files:
            raise UnpackLimitError(f"more than {self.max_files} members (max_unpack_files)")

    def inside(self, name: str) -> Path | None:
        """``dest/name``, or None (counted) when the name would leave the folder."""
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            self.skipped["unsafe_path"] += 1
            return None
        clean = "/".join(p for p in parts if p not in ("", "."))
        if not clean:
            return None
        return self.dest / clean

    def directory(self, path: Path) -> None:
        self._guard(path, lambda: path.mkdir(parents=True, exist_ok=True))

    def file(self, path: Path, size: int, open_member: Callable[[], IO[bytes]]) -> None:
        rel = path.relative_to(self.dest).as_posix()
        if size > self.max_bytes:
            if self.wanted(rel):
                self.skipped["too_large"] += 1
            return
        self._guard(path, lambda: self._copy(path, open_member))

    def _copy(self, path: Path, open_member: Callable[[], IO[bytes]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open_member() as source, open(path, "wb") as target:
                size = 0
                while block := source.read(1 << 20):
                    size += len(block)
                    self.written += len(block)
                    if size > self.max_bytes:  # the header lied about the size
                        raise _TooLarge
                    if self.written > self.max_total:
                        raise UnpackLimitError(f"more than {self.max_total} bytes (max_unpack_bytes)")
                    target.write(block)
        except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as error:
            # An encrypted member, an unknown compression or a bad CRC concerns this member only.
            if path.is_file():
                path.unlink()
            self.skipped["bad_member"] += 1
            log.info("archive member skipped (%s): %s", error, str(path)[-120:])
        except _TooLarge:
            path.unlink()
            if self.wanted(path.relative_to(self.dest).as_posix()):
                self.skipped["too_large"] += 1
        except BaseException:
            if path.is_file():
                path.unlink()
            raise

    def link(self, path: Path, target: str) -> None:
        if len(target.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES or "\0" in target:
            self.skipped["bad_member"] += 1
        elif os.path.isabs(target):
            self.skipped["link_outside"] += 1
        else:
            self.links.append((path.relative_to(self.dest).as_posix(), target))

    def finish_links(self) -> None:
        """Create symlinks last, so no member is ever written through one; keep only those that
        resolve inside the folder, then check every link again on the path it resolves to now that
        all exist (``x -> a/../..`` passes alone, and leaves the folder once ``a`` is a link too)."""
        root = os.path.realpath(self.dest)
        for rel, target in self.links:
            path = self.dest / rel
            parent = os.path.realpath(path.parent)
            resolved = os.path.realpath(os.path.join(parent, target))
            if not _within(parent, root) or not _within(resolved, root):
                self.skipped["link_outside"] += 1
                continue
            self._guard(path, lambda path=path, target=target: _symlink(target, path))
        while escaping := [
            path for path in _links_under(self.dest) if not _within(os.path.realpath(path), root)
        ]:
            for path in escaping:  # removing one can change where others resolve: check again
                os.unlink(path)
                self.skipped["link_outside"] += 1

    def _guard(self, path: Path, action: Callable[[], Any]) -> None:
        try:
            action()
        except OSError as error:
            if error.errno not in _MEMBER_ERRNOS:
                raise
            self.skipped["bad_member"] += 1
            log.info("archive member skipped (%s): %s", error.strerror, str(path)[-120:])


class _TooLarge(Exception):
    pass


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _links_under(folder: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # links to folders are listed, never entered
        found += [
            os.path.join(dirpath, n) for n in dirnames + filenames if os.path.islink(os.path.join(dirpath, n))
        ]
    return found


def _symlink(target: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def _unpack_zip(path: Path, unpacker: Unpacker) -> None:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            place = unpacker.place(info.filename)
            if place is None:
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                if info.file_size > MAX_NAME_BYTES:  # a link's target is its data: never read a huge one
                    unpacker.skipped["bad_member"] += 1
                    continue
                with archive.open(info) as member:
                    target = member.read(MAX_NAME_BYTES + 1)
                unpacker.link(place, target.decode("utf-8", errors="replace"))
            elif info.is_dir():
                unpacker.directory(place)
            else:
                unpacker.file(place, info.file_size, lambda info=info: archive.open(info))


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's member, with each extended header checked against a bound before it is read.

    ``_proc_gnulong``, ``_proc_pax`` and ``_proc_sparse`` are tarfile's hooks for those header types
    (the same since Python 3.0); tarfile itself reads such a header whole, whatever size it declares.
    """

    refused = False

    def _proc_gnulong(self, tarfile_: Any) -> Any:
        if self.size > MAX_NAME_BYTES:
            return self._skip_header(tarfile_)
        return super()._proc_gnulong(tarfile_)

    def _proc_pax(self, tarfile_: Any) -> Any:
        if self.size > MAX_HEADER_BYTES:
            return self._skip_header(tarfile_)
        return super()._proc_pax(tarfile_)

    def _proc_sparse(self, tarfile_: Any) -> Any:
        """A sparse file is never source code, and its map grows by one block after another without
        bound: pass over the map unread and refuse the member (what tarfile does, minus the map)."""
        _, extended, size = self._sparse_structs
        del self._sparse_structs
        while extended:
            block = tarfile_.fileobj.read(tarfile.BLOCKSIZE)
            extended = len(block) == tarfile.BLOCKSIZE and bool(block[504])
        self.sparse, self.refused = [], True
        self.offset_data = tarfile_.fileobj.tell()
        tarfile_.offset = self.offset_data + self._block(self.size)
        self.size = size
        return self

    def _skip_header(self, tarfile_: Any) -> Any:
        """Pass over this header's data unread (a seek streams through a compressed archive) and
        return the member it describes, refused."""
        left = self._block(self.size)
        if isinstance(tarfile_.fileobj, io.BufferedReader):  # a plain .tar: seek past it
            tarfile_.fileobj.seek(left, os.SEEK_CUR)
        else:  # compressed: read through it a block at a time (a seek there reads 8 KiB at a time)
            while left and (block := tarfile_.fileobj.read(min(left, 1 << 20))):
                left -= len(block)
        try:
            member = self.fromtarfile(tarfile_)
        except tarfile.HeaderError as error:
            raise tarfile.SubsequentHeaderError(str(error)) from None
        member.offset, member.refused = self.offset, True
        return member


def _unpack_tar(path: Path, unpacker: Unpacker) -> None:
    with tarfile.open(path, tarinfo=_BoundedTarInfo) as archive:
        while (member := archive.next()) is not None:
            archive.members.clear()  # tarfile keeps every member read: streamed, none is held
            if member.refused:
                unpacker.count()
                unpacker.skipped["bad_member"] += 1
                continue
            place = unpacker.place(member.name)
            if place is None:
                continue
            if member.isdir():
                unpacker.directory(place)
            elif member.issym():
                unpacker.link(place, member.linkname)
            elif member.islnk():
                other = unpacker.inside(member.linkname)
                if other is None or not other.is_file() or other.is_symlink():
                    unpacker.skipped["bad_member"] += 1
                else:
                    unpacker.file(place, other.stat().st_size, functools.partial(Path.open, other, "rb"))
            elif member.isfile():
                unpacker.file(place, member.size, lambda member=member: archive.extractfile(member))
            else:
                unpacker.skipped["unsafe_path"] += 1  # devices and fifos are never source code


def unpack_archive(
    path: Path, cache: Path, cfg: Any, wanted: Callable[[str], bool] = lambda rel: True
) -> tuple[Path, Counter[str]]:
    """Unpack a .zip/.tar.* into the cache (once per archive and size bound); see the module docstring."""
    digest = hashlib.sha256(f"{cfg.max_bytes}\0".encode())
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    target = cache / "archives" / f"{path.name[:80]}-{digest.hexdigest()[:16]}"
    if (target / MARKER).is_file():
        return target, Counter(json.loads((target / MARKER).read_text()))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent)).resolve()
    unpacker = Unpacker(tmp, cfg.max_bytes, cfg.max_unpack_bytes, cfg.max_unpack_files, wanted)
    try:
        if path.name.lower().endswith(".zip"):
            _unpack_zip(path, unpacker)
        else:
            _unpack_tar(path, unpacker)
        unpacker.finish_links()
        (tmp / MARKER).write_text(json.dumps(dict(unpacker.skipped)))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except UnpackLimitError as error:
        raise InputError(
            f"archive {path} refused: it unpacks to {error}; raise the limit with --set if it is genuine"
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise InputError(f"cannot unpack archive {path}: {error}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, unpacker.skipped


@register_source("archive")
def resolve_archive(text: str, cfg: Any, work: Path) -> list[Source]:
    from codetune.collect.walk import Candidates
    from codetune.languages import get_language

    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(f"source not found: {text}")
    cache = cache_root(cfg)
    wanted = Candidates.from_config(get_language(cfg.language), cfg)
    source = Source("archive", str(path.resolve()), repo_name(str(path)), lambda: Path(), use_git=False)

    def fetch() -> Path:
        root, skipped = unpack_archive(path, cache, cfg, wanted)
        source.extra["skipped"] = dict(skipped)
        return root

    source.fetch = fetch
    return [source]
