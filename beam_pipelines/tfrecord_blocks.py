"""TFRecord files written a block of records at a time.

``beam.io.WriteToTFRecord`` takes one element per record: the runner pays its per-element cost
(window assignment, the sink's write call, the hand-over between operations) for every example.
Finalize (``stages/finalize.py``) encodes a whole write bucket at once (``stages/shuffle.py``),
so it frames the bucket's records itself (:func:`frame_records`) and hands the sink ONE element
per bucket; :class:`WriteTFRecordBlocks` writes such blocks verbatim, through Beam's file-based
sink (the same temporary files, shard naming and finalisation as ``WriteToTFRecord``).

The framing is TensorFlow's TFRecord format: per record, its length (uint64, little-endian),
the masked CRC-32C of those 8 bytes, the record, the masked CRC-32C of the record (CRC-32C from
``google-crc32c``, the library Beam's own TFRecord writer uses). ``tests/test_tfrecord_blocks.py``
checks the bytes against ``WriteToTFRecord``'s files and reads them back with ``tf.data``.
"""

from __future__ import annotations

import struct
from typing import Iterable

import apache_beam as beam
import google_crc32c
from apache_beam import coders
from apache_beam.io import filebasedsink, iobase
from apache_beam.io.filesystem import CompressionTypes

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_CRC_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: the CRC rotated right by 15 bits plus a constant (mod 2³²)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame_record(record: bytes) -> bytes:
    """One record in the TFRecord format: length, its masked CRC, the record, its masked CRC."""
    length = _LENGTH.pack(len(record))
    return b"".join((length, _CRC.pack(masked_crc32c(length)), record,
                     _CRC.pack(masked_crc32c(record))))


def frame_records(records: Iterable[bytes]) -> bytes:
    """Records framed one after another: a block that is a valid TFRecord file on its own and
    can be appended to one."""
    return b"".join(map(frame_record, records))


class _BlockSink(filebasedsink.FileBasedSink):
    """A file-based sink whose elements are already-framed TFRecord blocks: written verbatim."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int):
        super().__init__(file_path_prefix=file_path_prefix, coder=coders.BytesCoder(),
                         file_name_suffix=file_name_suffix, num_shards=num_shards,
                         shard_name_template=None, mime_type="application/octet-stream",
                         compression_type=CompressionTypes.AUTO)

    def write_encoded_record(self, file_handle, value: bytes) -> None:
        file_handle.write(value)


class WriteTFRecordBlocks(beam.PTransform):
    """Writes blocks of :func:`frame_records` as TFRecord files: the arguments and file names of
    ``beam.io.WriteToTFRecord``, one element per block instead of one per record."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = "", num_shards: int = 0):
        super().__init__()
        self._sink = _BlockSink(file_path_prefix, file_name_suffix, num_shards)

    def expand(self, blocks):
        return blocks | iobase.Write(self._sink)
