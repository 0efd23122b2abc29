"""TFRecord blocks (beam_pipelines/tfrecord_blocks.py): the framing is TensorFlow's, byte for
byte, and a Beam pipeline that writes blocks writes the files WriteToTFRecord writes."""

from __future__ import annotations

import glob
import os
import struct

import apache_beam as beam
import pytest
import tensorflow as tf

from beam_pipelines.tfrecord_blocks import (WriteTFRecordBlocks, frame_record, frame_records,
                                            masked_crc32c)

RECORDS = [b"", b"a", b"hello world", bytes(range(256)) * 3]


def test_masked_crc_of_a_known_value():
    # CRC-32C("123456789") = 0xE3069283 (the standard check value of the Castagnoli CRC).
    # Masked: rotate right by 15 → ((c >> 15) | (c << 17)) mod 2³² = 0x2507C60D,
    # + 0xA282EAD8 = 0xC78AB0E5 (mod 2³²).
    assert masked_crc32c(b"123456789") == 0xC78AB0E5


def test_a_frame_is_length_crc_record_crc():
    framed = frame_record(b"abc")
    assert len(framed) == 8 + 4 + 3 + 4
    assert struct.unpack("<Q", framed[:8]) == (3,)
    assert struct.unpack("<I", framed[8:12]) == (masked_crc32c(struct.pack("<Q", 3)),)
    assert framed[12:15] == b"abc"
    assert struct.unpack("<I", framed[15:]) == (masked_crc32c(b"abc"),)


def test_tensorflow_reads_a_block_and_writes_the_same_bytes(tmp_path):
    path = str(tmp_path / "block.tfrecord")
    with open(path, "wb") as f:
        f.write(frame_records(RECORDS))
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == RECORDS
    theirs = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(theirs) as w:
        for r in RECORDS:
            w.write(r)
    assert open(theirs, "rb").read() == open(path, "rb").read()


@pytest.mark.parametrize("num_shards", [1, 2])
def test_blocks_through_beam_equal_write_to_tfrecord(tmp_path, num_shards):
    blocks = [RECORDS[:2], RECORDS[2:]]
    with beam.Pipeline(argv=["--direct_running_mode=in_memory"]) as p:
        (p | "Blocks" >> beam.Create([frame_records(b) for b in blocks])
         | WriteTFRecordBlocks(os.path.join(str(tmp_path), "blocks", "part"),
                               file_name_suffix=".tfrecord", num_shards=num_shards))
        (p | "Records" >> beam.Create(RECORDS)
         | beam.io.WriteToTFRecord(os.path.join(str(tmp_path), "records", "part"),
                                   file_name_suffix=".tfrecord", num_shards=num_shards))
    ours = sorted(glob.glob(str(tmp_path / "blocks" / "*.tfrecord")))
    theirs = sorted(glob.glob(str(tmp_path / "records" / "*.tfrecord")))
    # The same file names (Beam's shard template) ...
    assert [os.path.basename(f) for f in ours] == [os.path.basename(f) for f in theirs]
    assert len(ours) == num_shards

    def read(files):
        return sorted(r.numpy() for f in files for r in tf.data.TFRecordDataset(f))
    # ... and the same records; a block is never cut: its records stay together in one file.
    assert read(ours) == read(theirs) == sorted(RECORDS)
    for block in blocks:
        assert any(all(r in read([f]) for r in block) for f in ours)
