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


def plugin_classes(trt):
    """(plugin class, creator class) bound to the TensorRT module `trt` (tensorrt or tensorrt_rtx)."""

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
            first, second = inputs[0], inputs[1] if len(inputs) > 1 else None
            name = self.op.name
            out = trt.DimsExprs(5 if name == "SparseWarp" else 4)
            if name == "SparseWarp":  # (B, K+1, C, H, W)
                dims = [first[0], second[1], first[1], first[2], first[3]]
            elif name == "ModulatedConv2d":  # (B from styles, Cout, H, W)
                dims = [inputs[2][0], second[0], first[2], first[3]]
            elif name == "DynamicConv2d":  # (B from gate, Cout, H, W)
                dims = [inputs[3][0], second[1], first[2], first[3]]
            else:
                dims = [first[i] for i in range(4)]
            for i, d in enumerate(dims):
                out[i] = d
            return [out]

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc if hasattr(in_out[pos], "desc") else in_out[pos]
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            main = in_out[0].desc.type if hasattr(in_out[0], "desc") else in_out[0].type
            if pos < num_inputs and self.op.inputs[pos] in plugin_ops.FLOAT32_INPUTS:
                return desc.type == trt.float32
            return desc.type in (trt.float32, trt.float16) and desc.type == main

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([
                trt.PluginField(name, np.array([value], dtype=np.int32 if kind == "int" else np.float32),
                                trt.PluginFieldType.INT32 if kind == "int" else trt.PluginFieldType.FLOAT32)
                for (name, kind), value in zip(self.op.attributes.items(), self.attributes.values())])

        def set_tactic(self, tactic):
            pass

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
                enqueue_node(self.op, self.attributes, input_desc, output_desc, inputs, outputs, workspace)

    class Creator(trt.IPluginCreatorV3One):
        def __init__(self, op: plugin_ops.PluginOp):
            trt.IPluginCreatorV3One.__init__(self)
            self.op = op
            self.name, self.plugin_version, self.plugin_namespace = op.name, plugin_ops.VERSION, plugin_ops.DOMAIN
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField(name, np.array([]), trt.PluginFieldType.INT32 if kind == "int"
                                else trt.PluginFieldType.FLOAT32) for name, kind in op.attributes.items()])

        def create_plugin(self, name, fields, phase):
            attributes = {f.name: np.asarray(f.data).reshape(-1)[0].item() for f in fields}
            missing = set(self.op.attributes) - set(attributes)
            if missing:
                raise ValueError(f"{self.op.name}: attributes {sorted(missing)} are missing")
            return Plugin(self.op, {name: attributes[name] for name in self.op.attributes})

    return Plugin, Creator


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
