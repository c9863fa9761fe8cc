"""TensorRT IPluginV3 plugins (Python) for the plugin graph's `mcnet_rt` nodes (`plugin_ops.PLUGIN_OPS`).

`enqueue` views TensorRT's device pointers as torch tensors and runs the public op's `_into` form
(`torch.ops.mcnet_rt`, the ops library) on TensorRT's stream, so the engine runs the same kernels as PyTorch, writing
straight into TensorRT's output buffer with its temporaries in TensorRT's workspace (`get_workspace_size`): nothing
is allocated or copied per node. Works with the `tensorrt` (10/11) and `tensorrt_rtx` modules: both expose the same
plugin interfaces. Running an engine needs a GPU: the enqueue path has not run on a GPU yet (its body has, on host
buffers, in the tests); parsing and building an engine with these plugins registered has.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import plugin_ops

_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16}


class _Array:
    """A pointer with shape and dtype, as `__cuda_array_interface__` (how torch views TensorRT's device memory) or,
    for host memory, NumPy's `__array_interface__`."""

    def __init__(self, pointer: int, shape: tuple[int, ...], dtype: torch.dtype, device: str):
        typestr = {torch.float32: "<f4", torch.float16: "<f2", torch.bfloat16: "<V2"}[dtype]
        interface = {"shape": shape, "typestr": typestr, "data": (pointer, False), "version": 3, "strides": None}
        setattr(self, "__cuda_array_interface__" if device == "cuda" else "__array_interface__", interface)


def torch_dtype(trt_dtype) -> torch.dtype:
    """The torch type of a TensorRT `DataType` (of the `tensorrt` or `tensorrt_rtx` module)."""
    return _TORCH_DTYPES[trt_dtype.name]


def _view(pointer: int, shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    """The memory at `pointer` as a tensor (no copy; an empty tensor where TensorRT gives no memory)."""
    if math.prod(shape) == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    array = _Array(pointer, shape, dtype, device)
    return torch.as_tensor(array, device="cuda") if device == "cuda" else torch.from_numpy(np.asarray(array))


def enqueue_node(op: plugin_ops.PluginOp, attributes: dict, input_desc, output_desc, inputs, outputs,
                 workspace: int, device: str = "cuda") -> None:
    """The body of a plugin's `enqueue` on the current stream: TensorRT's input, output and workspace pointers
    viewed as tensors (on `device`: "cpu" runs it on host buffers, where TensorRT cannot run), the op written into
    the output."""
    tensors = [_view(p, tuple(d.dims), torch_dtype(d.type), device) for p, d in zip(inputs, input_desc)]
    out = _view(outputs[0], tuple(output_desc[0].dims), torch_dtype(output_desc[0].type), device)
    elements = plugin_ops.workspace_elements(op, attributes, [tuple(d.dims) for d in input_desc])
    plugin_ops.run_into(op, attributes, tensors, out, _view(workspace, (elements,), torch.float32, device))


def _descs(in_out) -> list:
    """The tensor descriptions TensorRT passes (a `DynamicPluginTensorDesc` holds one as `.desc`)."""
    return [getattr(item, "desc", item) for item in in_out]


def supports_format(op: plugin_ops.PluginOp, trt, pos: int, in_out, num_inputs: int) -> bool:
    """Linear layout; the `FLOAT32_INPUTS` in float32, every other tensor in the first input's float32 or float16."""
    descs = _descs(in_out)
    desc, main = descs[pos], descs[0].type
    if desc.format != trt.TensorFormat.LINEAR:
        return False
    if pos < num_inputs and op.inputs[pos] in plugin_ops.FLOAT32_INPUTS:
        return desc.type == trt.float32
    return desc.type in (trt.float32, trt.float16) and desc.type == main


def _field_type(trt, kind: str):
    return trt.PluginFieldType.INT32 if kind == "int" else trt.PluginFieldType.FLOAT32


def serialized_fields(op: plugin_ops.PluginOp, trt, attributes: dict):
    """The node's attributes as the plugin fields an engine stores."""
    return trt.PluginFieldCollection([
        trt.PluginField(name, np.array([attributes[name]], dtype=np.int32 if kind == "int" else np.float32),
                        _field_type(trt, kind))
        for name, kind in op.attributes.items()])


def output_dims(op: plugin_ops.PluginOp, trt, inputs):
    """The output's size expressions from the inputs' (`PluginOp.output_shape`)."""
    dims = op.output_shape(inputs)
    out = trt.DimsExprs(len(dims))
    for i, d in enumerate(dims):
        out[i] = d
    return out


def _plugin_class(trt):
    """The IPluginV3 plugin class bound to the TensorRT module `trt`: one node of a `PluginOp` row."""

    class Plugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, op: plugin_ops.PluginOp, attributes: dict):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.op, self.attributes = op, attributes
            self.plugin_name, self.plugin_version = op.name, plugin_ops.VERSION
            self.plugin_namespace = plugin_ops.DOMAIN
            self.num_outputs = 1

        def get_capability_interface(self, kind):
            return self

        def clone(self):
            return Plugin(self.op, dict(self.attributes))

        def configure_plugin(self, inputs, outputs):
            pass

        def on_shape_change(self, inputs, outputs):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def get_workspace_size(self, inputs, outputs):
            shapes = [tuple(desc.max) for desc in inputs]  # the largest shapes the engine runs
            return 4 * plugin_ops.workspace_elements(self.op, self.attributes, shapes)

        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, exprs):
            return [output_dims(self.op, trt, inputs)]

        def supports_format_combination(self, pos, in_out, num_inputs):
            return supports_format(self.op, trt, pos, in_out, num_inputs)

        def get_fields_to_serialize(self):
            return serialized_fields(self.op, trt, self.attributes)

        def set_tactic(self, tactic):
            pass

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
                enqueue_node(self.op, self.attributes, input_desc, output_desc, inputs, outputs, workspace)

    return Plugin


def _creator_class(trt, plugin):
    """The creator class of `plugin` nodes, bound to the TensorRT module `trt`."""

    class Creator(trt.IPluginCreatorV3One):
        def __init__(self, op: plugin_ops.PluginOp):
            trt.IPluginCreatorV3One.__init__(self)
            self.op = op
            self.name, self.plugin_version, self.plugin_namespace = op.name, plugin_ops.VERSION, plugin_ops.DOMAIN
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField(name, np.array([]), _field_type(trt, kind)) for name, kind in op.attributes.items()])

        def create_plugin(self, name, fields, phase):
            attributes = {f.name: np.asarray(f.data).reshape(-1)[0].item() for f in fields}
            missing = set(self.op.attributes) - set(attributes)
            if missing:
                raise ValueError(f"{self.op.name}: attributes {sorted(missing)} are missing")
            return plugin(self.op, {name: attributes[name] for name in self.op.attributes})

    return Creator


def plugin_classes(trt):
    """(plugin class, creator class) bound to the TensorRT module `trt` (tensorrt or tensorrt_rtx)."""
    plugin = _plugin_class(trt)
    return plugin, _creator_class(trt, plugin)


_CREATORS: dict[int, list] = {}


def register(trt) -> list[str]:
    """Register a creator per plugin node with `trt`'s plugin registry (once per module); returns their names."""
    if id(trt) not in _CREATORS:
        _, Creator = plugin_classes(trt)
        creators = [Creator(op) for op in plugin_ops.PLUGIN_OPS]
        registry = trt.get_plugin_registry()
        for creator in creators:
            registry.register_creator(creator, plugin_ops.DOMAIN)
        _CREATORS[id(trt)] = creators  # the registry does not own Python creators: keep them alive
    return [op.name for op in plugin_ops.PLUGIN_OPS]
