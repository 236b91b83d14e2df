"""hrnet_jax.data.records: the lean parser of raw-array records gives what tfds gives."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hrnet_jax.data import records


def features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "pixels": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                       encoding=tfds.features.Encoding.BYTES),
        "fixed": tfds.features.Tensor(shape=(2, 2), dtype=np.uint16,
                                      encoding=tfds.features.Encoding.BYTES),
        "points": tfds.features.Tensor(shape=(17, 3), dtype=np.float32),
        "origin": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "id": np.int64,
        "name": tfds.features.Text(),
    })


def test_lean_parser_equals_tfds_on_every_kind_of_feature():
    spec, rng = features(), np.random.default_rng(0)
    described = records.fields(spec)
    for height, width in [(5, 7), (1, 1), (300, 200)]:
        example = {"pixels": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                   "fixed": rng.integers(0, 65535, (2, 2), dtype=np.uint16),
                   "points": rng.normal(size=(17, 3)).astype(np.float32),
                   "origin": np.array([-5, 2 ** 31 - 1], np.int32),
                   "id": -(2 ** 62) + height, "name": f"frame {height}"}
        serialized = spec.serialize_example(example)
        expected = spec.deserialize_example_np(serialized)
        found = records.parse(serialized, described)
        assert found.keys() == expected.keys()
        for key, value in expected.items():
            if not isinstance(value, np.ndarray):  # text: bytes; a scalar: a Python number
                assert type(found[key]) is type(value) and found[key] == value, key
                continue
            assert found[key].dtype == value.dtype and found[key].shape == value.shape, key
            np.testing.assert_array_equal(found[key], value)


def test_unpacked_numbers_and_other_features():
    """Numbers written one field each (protocol buffers may), not packed: read alike. A feature
    the parser does not know (an encoded image) is refused by name."""
    def varint(value: int) -> bytes:
        out = bytearray()
        value &= (1 << 64) - 1
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    def message(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    integers = b"".join(varint(1 << 3) + varint(v) for v in (-3, 7))  # field 1, wire type 0
    floats = b"".join(varint(1 << 3 | 5) + np.float32(v).tobytes() for v in (0.5, -2.0))
    entry = lambda name, kind, payload: message(1, message(1, name.encode())  # noqa: E731
                                                + message(2, message(kind, payload)))
    serialized = message(1, entry("origin", 3, integers) + entry("scale", 2, floats))
    spec = tfds.features.FeaturesDict({"origin": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                                       "scale": tfds.features.Tensor(shape=(2,), dtype=np.float32)})
    found = records.parse(serialized, records.fields(spec))
    np.testing.assert_array_equal(found["origin"], [-3, 7])
    np.testing.assert_array_equal(found["scale"], [0.5, -2.0])
    with pytest.raises(TypeError, match="image: a Image feature"):
        records.fields(tfds.features.FeaturesDict({"image": tfds.features.Image()}))


def test_a_corrupt_record_is_named(tmp_path):
    """A record that is not what the dataset wrote: an error naming the dataset, its folder,
    the split and the record, not a parser's traceback."""
    spec = features()
    good = spec.serialize_example({"pixels": np.zeros((2, 2, 3), np.uint8),
                                   "fixed": np.zeros((2, 2), np.uint16),
                                   "points": np.zeros((17, 3), np.float32),
                                   "origin": np.zeros(2, np.int32), "id": 1, "name": "a"})

    class Info:
        name, data_dir, features = "crops", str(tmp_path), spec

    class Source:
        dataset_info, split, data_source = Info, "train", [good, good[:-7], b"\xff\xff"]

    lean = records.TensorRecords(Source)
    assert lean[0]["id"] == 1
    for index in (1, 2):
        with pytest.raises(ValueError, match=rf"crops \({tmp_path}\), train record {index}: "
                                             "not a readable record"):
            lean[index]
