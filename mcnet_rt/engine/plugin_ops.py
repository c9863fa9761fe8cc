"""The plugin graph's custom nodes: one per public op of `mcnet_rt.ops`, in the `mcnet_rt` domain, with the
names, version and attributes that the TensorRT plugins (`engine.tensorrt_plugins`) register. One table, read by
the ONNX exporter, the plugins and the ONNX Runtime reference ops that check the graph's numerics: each row says
all that a node needs (its output shape, its op's arguments, its reference, its ONNX emitter), so adding an op is
adding a row."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import ops as _ops  # registers torch.ops.mcnet_rt.* and holds the references

DOMAIN = "mcnet_rt"
VERSION = "1"


def _node(op_type: str, *inputs, **attributes):
    """One `mcnet_rt` node in the graph being exported (an onnxscript call in the exporter's tracing mode)."""
    import onnxscript

    return getattr(onnxscript.values.Opset(DOMAIN, 1), op_type)(*inputs, **attributes)


# The emitters: their signatures are the torch ops' (the exporter binds a node's arguments to them by name).
def _emit_warp_features(features, deformation, occlusion=None):
    return _node("WarpFeatures", *(t for t in (features, deformation, occlusion) if t is not None))


def _emit_sparse_warp(image, motions):
    return _node("SparseWarp", image, motions)


def _emit_modulated_conv2d(x, weight, styles, demodulate: bool, eps: float):
    return _node("ModulatedConv2d", x, weight, styles, demodulate=int(demodulate), eps=eps)


def _emit_dynamic_conv2d(x, expert_weight, expert_bias, gate):
    return _node("DynamicConv2d", x, expert_weight, expert_bias, gate)


def _emit_memory_attention(query, key, value, scale: float):
    return _node("MemoryAttention", query, key, value, scale=scale)


Dims = Sequence  # one input's shape: a tuple of ints, or TensorRT's DimsExprs of size expressions


@dataclass(frozen=True)
class PluginOp:
    name: str  # ONNX op_type and TensorRT plugin name
    torch_op: str  # the public op in torch.ops.mcnet_rt
    inputs: tuple[str, ...]
    attributes: dict  # name -> ONNX attribute type ("float", "int")
    output_shape: Callable[[Sequence[Dims]], list]  # the inputs' shapes -> the output's (ints or size expressions)
    arguments: Callable[[dict], tuple]  # the attributes -> the op's arguments after its tensors
    reference: Callable[..., torch.Tensor]  # the op's PyTorch reference, on the tensors and `arguments`
    emit: Callable  # the torch op -> the node, for `torch.onnx.export(custom_translation_table=)`
    # float32 elements of the temporaries that the op's `_into` form keeps in a workspace, from the attributes and
    # the inputs' shapes; None where it takes no workspace.
    workspace: Callable[[dict, Sequence[tuple[int, ...]]], int] | None = None
    optional: tuple[str, ...] = ()  # trailing inputs a node may leave out

    @property
    def input_counts(self) -> tuple[int, ...]:
        """How many inputs a node may have."""
        return tuple(range(len(self.inputs) - len(self.optional), len(self.inputs) + 1))


def _no_arguments(attributes: dict) -> tuple:
    return ()


def _same_shape(shapes: Sequence[Dims]) -> list:
    return [shapes[0][i] for i in range(4)]


PLUGIN_OPS = (
    PluginOp("WarpFeatures", "warp_features", ("features", "deformation", "occlusion"), {}, _same_shape,
             _no_arguments, _ops.warp_features_reference, _emit_warp_features, optional=("occlusion",)),
    PluginOp("SparseWarp", "sparse_warp", ("image", "motions"), {},
             lambda s: [s[0][0], s[1][1], s[0][1], s[0][2], s[0][3]],  # (B, K+1, C, H, W)
             _no_arguments, _ops.sparse_warp_reference, _emit_sparse_warp),
    PluginOp("ModulatedConv2d", "modulated_conv2d", ("x", "weight", "styles"), {"demodulate": "int", "eps": "float"},
             lambda s: [s[2][0], s[1][0], s[0][2], s[0][3]],  # (B from styles, Cout, H, W)
             lambda a: (bool(a["demodulate"]), float(a["eps"])), _ops.modulated_conv2d_reference,
             _emit_modulated_conv2d,
             workspace=lambda a, s: s[2][0] * s[1][0] if a["demodulate"] else 0),  # the demodulation (B, Cout)
    PluginOp("DynamicConv2d", "dynamic_conv2d", ("x", "expert_weight", "expert_bias", "gate"), {},
             lambda s: [s[3][0], s[1][1], s[0][2], s[0][3]],  # (B from gate, Cout, H, W)
             _no_arguments, _ops.dynamic_conv2d_reference, _emit_dynamic_conv2d,
             workspace=lambda a, s: s[3][0] * s[1][1]),  # the mixed biases (B, Cout)
    PluginOp("MemoryAttention", "memory_attention", ("query", "key", "value"), {"scale": "float"}, _same_shape,
             lambda a: (float(a["scale"]),), _ops.memory_attention_reference, _emit_memory_attention,
             workspace=lambda a, s: s[0][0] * math.prod(s[0][2:])),  # the log-sum-exp (B, Nq)
)
BY_NAME = {op.name: op for op in PLUGIN_OPS}
# Operands in float32 whatever the graph's precision (sampling coordinates, occlusion, per-sample scales and
# mixes: the kernels read them in their accumulation type); the others share the node's type.
FLOAT32_INPUTS = frozenset({"deformation", "occlusion", "motions", "styles", "expert_bias", "gate"})


def torch_op(op: PluginOp):
    return getattr(torch.ops.mcnet_rt, op.torch_op).default


def workspace_elements(op: PluginOp, attributes: dict, shapes: Sequence[tuple[int, ...]]) -> int:
    """float32 elements of the temporaries that the node's `_into` op keeps in its workspace, for inputs of
    `shapes`."""
    return op.workspace(attributes, shapes) if op.workspace else 0


def _padded(op: PluginOp, inputs: Sequence) -> list:
    """The node's inputs with the optional ones it leaves out given as None, as the op takes them."""
    return [*inputs, *[None] * (len(op.inputs) - len(inputs))]


def run_into(op: PluginOp, attributes: dict, inputs: list[torch.Tensor], out: torch.Tensor,
             workspace: torch.Tensor) -> None:
    """The node on `inputs`, written into `out` by the op's `_into` form (temporaries in `workspace`, a float32
    tensor of at least `workspace_elements`): nothing is allocated."""
    into = getattr(torch.ops.mcnet_rt, op.torch_op + "_into").default
    into(*_padded(op, inputs), *op.arguments(attributes), out, *([workspace] if op.workspace else []))


def register_schemas() -> None:
    """Declare the nodes to onnx (once per process), so the exporter and onnx.checker know them."""
    import onnx
    from onnx.defs import OpSchema

    kinds = {"float": OpSchema.AttrType.FLOAT, "int": OpSchema.AttrType.INT}
    for op in PLUGIN_OPS:
        if onnx.defs.has(op.name, DOMAIN):
            continue
        inputs = [OpSchema.FormalParameter(name, "F" if name in FLOAT32_INPUTS else "T",
                                           param_option=OpSchema.FormalParameterOption.Optional
                                           if name in op.optional else OpSchema.FormalParameterOption.Single)
                  for name in op.inputs]
        constraints = [("T", ["tensor(float)", "tensor(float16)"], "the node's type: the data and weights")]
        if FLOAT32_INPUTS.intersection(op.inputs):
            constraints.append(("F", ["tensor(float)"], "coordinates, scales and mixes"))
        onnx.defs.register_schema(OpSchema(
            op.name, DOMAIN, 1, inputs=inputs, outputs=[OpSchema.FormalParameter("output", "T")],
            type_constraints=constraints,
            attributes=[OpSchema.Attribute(name, kinds[kind], required=True) for name, kind in op.attributes.items()]))


def translation_table() -> dict:
    """torch op -> onnxscript function emitting the custom node, for `torch.onnx.export(custom_translation_table=)`."""
    register_schemas()
    return {torch_op(op): op.emit for op in PLUGIN_OPS}


def reference(op: PluginOp, inputs: list[torch.Tensor], attributes: dict) -> torch.Tensor:
    """What a node computes, by the PyTorch reference of its op (the oracle for the plugin graph's numerics)."""
    return op.reference(*_padded(op, inputs), *op.arguments(attributes))
