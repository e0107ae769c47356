"""The only module of ``fedrec.common`` that knows Flower: schema objects ↔ Flower records.

Both the ClientApp and the ServerApp encode and decode through these functions, so the wire
format is defined once. Arrays are decoded as read-only views of the message bytes (no copy,
never unpickled); callers copy the rows they keep.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from numpy.lib import format as npy_format

from fedrec.common.schema import ItemUpdate, TrainConfig

# Record names inside a message's RecordDict.
ITEMS = "items"  # server -> device: ArrayRecord {factors, bias}
CONFIG = "config"  # server -> device: ConfigRecord (TrainConfig + round, mean, seed)
UPDATE = "update"  # device -> server: ArrayRecord {ids, rows, bias, counts}
METRICS = "metrics"  # device -> server: MetricRecord
USER = "user"  # device's context.state: ArrayRecord {vector: [p_u, b_u]}; never sent
WEIGHT_KEY = "num-examples"


def encode_array(array: np.ndarray) -> Array:
    """A Flower ``Array`` holding exactly the bytes ``np.save`` would write (``.npy``),
    built without a round trip through a file object."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    if array.dtype.hasobject:
        raise TypeError("object arrays are refused")
    header = _npy_header(array.dtype.str, array.shape)
    # The fields Flower's own Array.from_numpy_ndarray sets, without re-validating inputs
    # built here (the constructor's argument parsing is most of its cost).
    out = Array.__new__(Array)
    out.__dict__.update(dtype=array.dtype.name, shape=tuple(array.shape), stype=NUMPY,
                        data=header + array.tobytes())
    return out


def array_view(array: Array) -> np.ndarray:
    """A read-only numpy view of a Flower ``Array`` (``.npy`` bytes), without copying.

    Refuses object dtypes (nothing is ever unpickled).
    """
    if array.stype != NUMPY:
        raise TypeError(f"expected a numpy array, found serialization {array.stype!r}")
    data = array.data
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise TypeError("not .npy data")
    if data[6] == 1:
        end = 10 + int.from_bytes(data[8:10], "little")
    elif data[6] in (2, 3):
        end = 12 + int.from_bytes(data[8:12], "little")
    else:
        raise TypeError(f"unsupported .npy format version {data[6]}")
    shape, fortran, dtype = _parse_header(bytes(data[:end]))
    count = int(np.prod(shape)) if shape else 1
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=end)
    return flat.reshape(shape, order="F" if fortran else "C")


NUMPY = "numpy.ndarray"


@lru_cache(maxsize=4096)
def _parse_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    head = io.BytesIO(header)
    version = npy_format.read_magic(head)
    read = {(1, 0): npy_format.read_array_header_1_0,
            (2, 0): npy_format.read_array_header_2_0}.get(version)
    if read is None:
        raise TypeError(f"unsupported .npy format version {version}")
    shape, fortran, dtype = read(head)
    if dtype.hasobject:
        raise TypeError("object arrays are refused")
    return shape, fortran, dtype


@lru_cache(maxsize=4096)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def arrays_to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    record = ArrayRecord()  # filled item by item: the dict constructor rebuilds every Array
    for key, value in arrays.items():
        record[key] = encode_array(value)
    return record


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array_view(arr) for key, arr in record.items()}


def update_to_record(update: ItemUpdate) -> ArrayRecord:
    return arrays_to_record(update.arrays())


def items_to_record(factors: np.ndarray, bias: np.ndarray) -> ArrayRecord:
    return arrays_to_record({"factors": factors, "bias": bias})


def record_to_items(record: ArrayRecord) -> tuple[np.ndarray, np.ndarray]:
    arrays = record_to_arrays(record)
    return arrays["factors"], arrays["bias"]


def config_to_record(config: TrainConfig, **extra: int | float | str | bool) -> ConfigRecord:
    return ConfigRecord({**config.to_dict(), **extra})


def record_to_config(record: ConfigRecord) -> tuple[TrainConfig, dict]:
    """Split a config record into the :class:`TrainConfig` and the remaining keys."""
    values = dict(record)
    own = {k: values.pop(k) for k in list(values) if k in TrainConfig.__dataclass_fields__}
    return TrainConfig.from_dict(own), values


def metrics_to_record(metrics: dict[str, float]) -> MetricRecord:
    return MetricRecord({k: float(v) for k, v in metrics.items()})
