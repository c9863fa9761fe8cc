"""The plugin graph's custom nodes: one per public op of `mcnet_rt.ops`, in the `mcnet_rt` domain, with the
names, version and attributes that the TensorRT plugins (`engine.tensorrt_plugins`) register. One table, read by
the ONNX exporter, the plugins and the ONNX Runtime reference ops that check the graph's numerics."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import ops as _ops  # noqa: F401  (registers torch.ops.mcnet_rt.*)

DOMAIN = "mcnet_rt"
VERSION = "1"


@dataclass(frozen=True)
class PluginOp:
    name: str  # ONNX op_type and TensorRT plugin name
    torch_op: str  # the public op in torch.ops.mcnet_rt
    inputs: tuple[str, ...]
    attributes: dict  # name -> ONNX attribute type ("float", "int")
    workspace: bool = False  # its `_into` form takes a float32 workspace for its temporaries


PLUGIN_OPS = (
    PluginOp("WarpFeatures", "warp_features", ("features", "deformation", "occlusion"), {}),
    PluginOp("SparseWarp", "sparse_warp", ("image", "motions"), {}),
    PluginOp("ModulatedConv2d", "modulated_conv2d", ("x", "weight", "styles"), {"demodulate": "int", "eps": "float"},
             workspace=True),
    PluginOp("DynamicConv2d", "dynamic_conv2d", ("x", "expert_weight", "expert_bias", "gate"), {}, workspace=True),
    PluginOp("MemoryAttention", "memory_attention", ("query", "key", "value"), {"scale": "float"}, workspace=True),
)
BY_NAME = {op.name: op for op in PLUGIN_OPS}
# Operands in float32 whatever the graph's precision (sampling coordinates, occlusion, per-sample scales and
# mixes: the kernels read them in their accumulation type); the others share the node's type.
FLOAT32_INPUTS = frozenset({"deformation", "occlusion", "motions", "styles", "expert_bias", "gate"})


def torch_op(op: PluginOp):
    return getattr(torch.ops.mcnet_rt, op.torch_op).default


def workspace_elements(op: PluginOp, attributes: dict, shapes: list[tuple[int, ...]]) -> int:
    """float32 elements of the temporaries that the node's `_into` op keeps in its workspace, for inputs of
    `shapes`: the demodulation, the mixed biases (B, Cout) or the attention's log-sum-exp (B, Nq)."""
    if op.name == "ModulatedConv2d":
        return shapes[2][0] * shapes[1][0] if attributes["demodulate"] else 0
    if op.name == "DynamicConv2d":
        return shapes[3][0] * shapes[1][1]
    if op.name == "MemoryAttention":
        return shapes[0][0] * math.prod(shapes[0][2:])
    return 0


def run_into(op: PluginOp, attributes: dict, inputs: list[torch.Tensor], out: torch.Tensor,
             workspace: torch.Tensor) -> None:
    """The node on `inputs`, written into `out` by the op's `_into` form (temporaries in `workspace`, a float32
    tensor of at least `workspace_elements`): nothing is allocated."""
    args = list(inputs)
    if op.name == "WarpFeatures" and len(args) == 2:
        args.append(None)
    if op.name == "ModulatedConv2d":
        args += [bool(attributes["demodulate"]), float(attributes["eps"])]
    if op.name == "MemoryAttention":
        args.append(float(attributes["scale"]))
    getattr(torch.ops.mcnet_rt, op.torch_op + "_into").default(*args, out, *([workspace] if op.workspace else []))


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
                                           if name == "occlusion" else OpSchema.FormalParameterOption.Single)
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
    import onnxscript

    register_schemas()

    domain = onnxscript.values.Opset(DOMAIN, 1)

    def warp_features(features, deformation, occlusion=None):
        if occlusion is None:
            return domain.WarpFeatures(features, deformation)
        return domain.WarpFeatures(features, deformation, occlusion)

    def sparse_warp(image, motions):
        return domain.SparseWarp(image, motions)

    def modulated_conv2d(x, weight, styles, demodulate: bool, eps: float):
        return domain.ModulatedConv2d(x, weight, styles, demodulate=int(demodulate), eps=eps)

    def dynamic_conv2d(x, expert_weight, expert_bias, gate):
        return domain.DynamicConv2d(x, expert_weight, expert_bias, gate)

    def memory_attention(query, key, value, scale: float):
        return domain.MemoryAttention(query, key, value, scale=scale)

    functions = {"WarpFeatures": warp_features, "SparseWarp": sparse_warp, "ModulatedConv2d": modulated_conv2d,
                 "DynamicConv2d": dynamic_conv2d, "MemoryAttention": memory_attention}
    return {torch_op(op): functions[op.name] for op in PLUGIN_OPS}


def reference(op: PluginOp, inputs: list[torch.Tensor], attributes: dict) -> torch.Tensor:
    """What a node computes, by the PyTorch reference of its op (the oracle for the plugin graph's numerics)."""
    from .. import ops
    if op.name == "WarpFeatures":
        return ops.warp_features_reference(*inputs)
    if op.name == "SparseWarp":
        return ops.sparse_warp_reference(*inputs)
    if op.name == "ModulatedConv2d":
        return ops.modulated_conv2d_reference(*inputs, bool(attributes["demodulate"]), attributes["eps"])
    if op.name == "DynamicConv2d":
        return ops.dynamic_conv2d_reference(*inputs)
    return ops.memory_attention_reference(*inputs, attributes["scale"])
