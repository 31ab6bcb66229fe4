"""Bounded gzip decompression: never past the size the file declares.

``gzip.decompress`` expands whatever it is given: a few kilobytes of zeros
become gigabytes before any check runs. :func:`gunzip_bounded` stops as soon as
the output passes the smallest of

- the size the gzip trailer declares (``ISIZE``, the uncompressed length),
- the size the content's own header declares (``declared(prefix)``, e.g. an
  IDX header's dimensions), and
- :data:`MAX_BYTES`,

so memory is bounded by what the file claims to be, whatever it contains.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

#: Largest decompressed file read (the standard datasets are at most ~50 MB per file).
MAX_BYTES = 1 << 30
_CHUNK = 1 << 16
#: Bytes of output decompressed first, for ``declared`` to read a header from.
PEEK = 1024


class GunzipError(ValueError):
    """The stream is corrupt, truncated, or expands past its declared size (message says which)."""


def gunzip_bounded(raw: bytes, declared: Callable[[bytes], int | None] | None = None) -> bytes:
    """Decompress one gzip member, refusing to produce more than its declared size."""
    if len(raw) < 18:
        raise GunzipError(f"a gzip file is at least 18 bytes, got {len(raw)}")
    limit = min(int.from_bytes(raw[-4:], "little"), MAX_BYTES)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = memoryview(raw)

    def pump(upto: int) -> None:
        nonlocal pending
        while len(out) < upto and not d.eof:
            if d.unconsumed_tail:
                data = d.unconsumed_tail
            elif len(pending):
                data, pending = bytes(pending[:_CHUNK]), pending[_CHUNK:]
            else:
                return
            out.extend(d.decompress(data, upto - len(out)))

    try:
        if declared is not None:
            pump(min(PEEK, limit + 1))
            size = declared(bytes(out))
            if size is not None:
                limit = min(limit, size)
        pump(limit + 1)
    except zlib.error as exc:
        raise GunzipError(f"a corrupt gzip stream (zlib.error: {exc})") from None
    if len(out) > limit:
        raise GunzipError(f"a stream that expands past its declared size of {limit} bytes (stopped there)")
    if not d.eof:
        raise GunzipError("a truncated gzip stream (it ends before its last block)")
    if d.unused_data.strip(b"\0"):
        raise GunzipError("trailing data after the gzip stream")
    return bytes(out)
