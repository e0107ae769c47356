"""The only module of ``fedrec.common`` that knows Flower: schema objects ↔ Flower records.

Both the ClientApp and the ServerApp encode and decode through these functions, so the wire
format is defined once. Arrays are decoded as read-only views of the message bytes (no copy,
never unpickled); callers copy the rows they keep.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from numpy.lib import format as npy_format

from fedrec.common.schema import InvalidReplyError, ItemUpdate, TrainConfig

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
    dtype = array.dtype
    header = _npy_header(dtype.str, array.shape)
    # The fields Flower's own Array.from_numpy_ndarray sets, without re-validating inputs
    # built here (the constructor's argument parsing is most of its cost).
    out = Array.__new__(Array)
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    out.__dict__.update(dtype=name, shape=tuple(array.shape), stype=NUMPY,
                        data=header + array.tobytes())
    return out


def encoded_size(array: np.ndarray) -> int:
    """The bytes :func:`encode_array` would hold for ``array``, without encoding it."""
    array = np.asarray(array)
    return len(_npy_header(array.dtype.str, array.shape)) + array.nbytes


_DTYPE_NAMES: dict[np.dtype, str] = {}  # dtype.name is slow to compute


class DecodeError(ValueError):
    """Bytes that are not a well-formed ``.npy`` array (whatever numpy's parser raised)."""


def array_view(array: Array) -> np.ndarray:
    """A read-only numpy view of a Flower ``Array`` (``.npy`` bytes), without copying.

    The bytes are a peer's: anything malformed raises :class:`DecodeError`. Refuses object
    dtypes (nothing is ever unpickled).
    """
    stype, data = getattr(array, "stype", None), getattr(array, "data", None)
    if stype != NUMPY:
        raise DecodeError(f"expected a numpy array, found serialization {stype!r}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"array data must be bytes, found {type(data).__name__}")
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise DecodeError("not .npy data")
    if data[6] == 1:
        end = 10 + int.from_bytes(data[8:10], "little")
    elif data[6] in (2, 3):
        end = 12 + int.from_bytes(data[8:12], "little")
    else:
        raise DecodeError(f"unsupported .npy format version {data[6]}")
    if end > len(data):
        raise DecodeError(f"the .npy header claims {end} bytes, the array has {len(data)}")
    try:
        shape, fortran, dtype = _parse_header(bytes(data[:end]))
    except DecodeError:
        raise
    except Exception as exc:  # numpy's header parser raises SyntaxError, TokenError, ...
        raise DecodeError(f"unreadable .npy header ({type(exc).__name__})") from None
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - end:
        raise DecodeError(f"the .npy header says {shape} of {dtype}, the data holds "
                          f"{len(data) - end} bytes")
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
        raise DecodeError(f"unsupported .npy format version {version}")
    shape, fortran, dtype = read(head)
    if dtype.hasobject:
        raise DecodeError("object arrays are refused")
    return shape, fortran, dtype


@lru_cache(maxsize=4096)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def arrays_to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    # Filled directly: the keys are checked here and every value is an Array built by
    # encode_array, so Flower's per-entry type checks (most of the cost) have nothing to add.
    return _filled(ArrayRecord(), {_key(k): encode_array(v) for k, v in arrays.items()})


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"record keys must be str, found {type(key).__name__}")
    return key


def _filled(record: ArrayRecord | MetricRecord, entries: dict) -> ArrayRecord | MetricRecord:
    record.__dict__["_data"].update(entries)
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
    """Split a config record into the :class:`TrainConfig` and the remaining keys.

    Every device of a round gets the same config, so decoded configs are cached by content.
    """
    # Types are part of the key: 1, 1.0 and True hash alike but decode differently.
    items = tuple((k, type(v), v) for k, v in record.items())
    try:
        config, extra = _decode_config(items)
    except TypeError:  # an unhashable value (a list): decode without the cache
        config, extra = _decode_config.__wrapped__(items)
    return config, dict(extra)


@lru_cache(maxsize=64)
def _decode_config(items: tuple) -> tuple[TrainConfig, tuple]:
    values = {k: v for k, _, v in items}
    own = {k: values.pop(k) for k in list(values) if k in TrainConfig.__dataclass_fields__}
    return TrainConfig.from_dict(own), tuple(values.items())


def reply_records(content: object, expected: dict[str, type]) -> dict[str, object]:
    """A reply's records, which must be exactly ``expected`` (name → record type); raises
    :class:`~fedrec.common.schema.InvalidReplyError` (reason ``records``) otherwise."""
    if not isinstance(content, RecordDict):
        raise InvalidReplyError("records", f"no RecordDict, found {type(content).__name__}")
    names = sorted(map(str, content.keys()))
    if names != sorted(expected):
        raise InvalidReplyError("records", f"expected records {sorted(expected)}, found "
                                f"{names[:10]}")
    out = {}
    for name, kind in expected.items():
        record = content[name]
        if not isinstance(record, kind):
            raise InvalidReplyError("records", f"{name!r} must be a {kind.__name__}, found "
                                    f"{type(record).__name__}")
        out[name] = record
    return out


def metrics_to_record(metrics: dict[str, float]) -> MetricRecord:
    return _filled(MetricRecord(), {_key(k): float(v) for k, v in metrics.items()})
