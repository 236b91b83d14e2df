"""Records of raw arrays read with a lean parser.

The raw-pixel variants (cityscapes_raw, coco_keypoints_crops) store what is costly to decode as
plain tfds Tensor features, uncompressed (`Dataset.raw_records`): reading one is a copy. What
remained was tfds's general parser, feature by feature in Python (a person's crop: 0.28 ms of a
0.45 ms read, more than the bytes' copy). `TensorRecords` reads the same split's records and
turns each tf.train.Example into the arrays tfds would give (test: every record equal), knowing
only Tensor and Text features.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class TensorRecords:
    """Random access to a split of Tensor (and Text) features, as `builder.as_data_source`
    gives it, parsed by `parse`."""

    def __init__(self, source: Any):
        self.source = source  # tfds's data source: its files and record index are reused
        self._records = source.data_source
        self._fields = fields(source.dataset_info.features)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._parse(self._records[index], index)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self._parse(record, index) for record, index in
                zip(self._records.__getitems__(indices), indices)]

    def _parse(self, record: bytes, index: int) -> dict[str, Any]:
        try:
            return parse(record, self._fields)
        except (ValueError, IndexError, KeyError, UnicodeDecodeError) as error:
            info = self.source.dataset_info
            raise ValueError(f"{info.name} ({info.data_dir}), {self.source.split} record {index}: "
                             f"not a readable record ({type(error).__name__}: {error}); prepare "
                             "the dataset again") from None

    def __repr__(self) -> str:
        return f"TensorRecords({self.source!r})"


def fields(features: Any) -> list[tuple[str, str, np.dtype, tuple]]:
    """(name, how it is stored, dtype, shape) of each feature of a FeaturesDict of Tensor and
    Text features: "bytes" (Encoding.BYTES: the array's bytes, with `name/shape` beside them
    when a side is unknown), "floats" or "ints" (a list), "text"."""
    import tensorflow_datasets as tfds

    described = []
    for name, feature in features.items():
        if isinstance(feature, tfds.features.Text):
            described.append((name, "text", np.dtype(object), ()))
            continue
        if type(feature) is not tfds.features.Tensor:
            raise TypeError(f"{name}: a {type(feature).__name__} feature; TensorRecords reads "
                            "Tensor and Text features only")
        dtype, shape = np.dtype(feature.np_dtype), tuple(feature.shape)
        if feature._encoding == tfds.features.Encoding.BYTES:  # noqa: SLF001 (no public name)
            described.append((name, "bytes", dtype, shape))
        else:
            described.append((name, "floats" if np.issubdtype(dtype, np.floating) else "ints",
                              dtype, shape))
    return described


def parse(serialized: bytes, described: list[tuple[str, str, np.dtype, tuple]]
          ) -> dict[str, Any]:
    """One serialized tf.train.Example -> its features' arrays (`fields` says how); a raw
    array is a read-only view of the record's bytes (as tfds gives it), not a copy."""
    stored = example_features(serialized)
    out = {}
    for name, kind, dtype, shape in described:
        if kind == "bytes" and None in shape:  # the array's bytes and, beside them, its shape
            start, end = _first_bytes(serialized, *stored[f"{name}/value"])
            shape = tuple(_integers(serialized, *stored[f"{name}/shape"]))
            out[name] = np.frombuffer(serialized, dtype, (end - start) // dtype.itemsize,
                                      start).reshape(shape)
        elif kind == "bytes":
            start, end = _first_bytes(serialized, *stored[name])
            out[name] = np.frombuffer(serialized, dtype, (end - start) // dtype.itemsize,
                                      start).reshape(shape)
        elif kind == "text":
            start, end = _first_bytes(serialized, *stored[name])
            out[name] = serialized[start:end]
        else:
            numbers = (_floats if kind == "floats" else _integers)(serialized, *stored[name])
            array = np.asarray(numbers, dtype).reshape(shape)
            out[name] = array.item() if shape == () else array  # a scalar: as tfds gives it
    return out


# -- the protocol buffer wire format of tf.train.Example, as far as tfds writes it -----------
# Example {Features features = 1}; Features {map<string, Feature> feature = 1}; Feature
# {oneof: BytesList bytes_list = 1, FloatList float_list = 2, Int64List int64_list = 3}; each
# list {repeated value = 1} (numbers packed or not).

def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _fields(data: bytes, start: int, end: int):
    """(field number, wire type, value start, value end or the varint) of a message's span."""
    position = start
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, position = _varint(data, position)
            yield number, wire, position, position + length
            position += length
        elif wire == 0:
            value, position = _varint(data, position)
            yield number, wire, value, position
        elif wire == 5:
            yield number, wire, position, position + 4
            position += 4
        elif wire == 1:
            yield number, wire, position, position + 8
            position += 8
        else:
            raise ValueError(f"not a tf.train.Example (wire type {wire} at byte {position})")


def example_features(data: bytes) -> dict[str, tuple[int, int, int]]:
    """A serialized tf.train.Example's features: name -> (which list: 1 bytes, 2 floats,
    3 integers, and its span in `data`)."""
    features = {}
    for number, _, start, end in _fields(data, 0, len(data)):
        if number != 1:
            continue
        for entry_number, _, entry_start, entry_end in _fields(data, start, end):
            if entry_number != 1:
                continue
            name, value = "", (0, 0, 0)
            for part, _, part_start, part_end in _fields(data, entry_start, entry_end):
                if part == 1:
                    name = data[part_start:part_end].decode()
                elif part == 2:
                    value = next(((kind, list_start, list_end) for kind, _, list_start, list_end
                                  in _fields(data, part_start, part_end)), (0, 0, 0))
            features[name] = value
    return features


def _first_bytes(data: bytes, kind: int, start: int, end: int) -> tuple[int, int]:
    for _, _, value_start, value_end in _fields(data, start, end):
        return value_start, value_end
    return start, start


def _floats(data: bytes, kind: int, start: int, end: int) -> np.ndarray:
    values = []
    for _, wire, value_start, value_end in _fields(data, start, end):
        values.append(np.frombuffer(data, "<f4", (value_end - value_start) // 4, value_start)
                      if wire == 2 else np.frombuffer(data, "<f4", 1, value_start))
    return np.concatenate(values) if values else np.zeros(0, "<f4")


def _integers(data: bytes, kind: int, start: int, end: int) -> list[int]:
    values = []
    for _, wire, first, second in _fields(data, start, end):
        if wire == 0:
            values.append(first)
            continue
        position = first
        while position < second:
            value, position = _varint(data, position)
            values.append(value)
    return [value - (1 << 64) if value >= 1 << 63 else value for value in values]
