"""The plugin graph in ONNX Runtime: each `mcnet_rt` node runs its op's PyTorch reference as an
onnxruntime-extensions Python op (float32; a float16 node on casts), so CI checks the exported graph's numerics
without TensorRT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from mcnet_rt.engine import plugin_ops
from mcnet_rt.engine.onnx_export import nodes_in_float32


def _register() -> dict[tuple[str, int], str]:
    """Python ops for every plugin node and input count; returns (op_type, inputs) -> registered op type."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    names = {}
    for op in plugin_ops.PLUGIN_OPS:
        for count in op.input_counts:
            registered = f"{op.name}{count}"
            attrs = {name: PyCustomOpDef.dt_float if kind == "float" else PyCustomOpDef.dt_int64
                     for name, kind in op.attributes.items()}

            def body(*arrays, _op=op, **attributes):
                inputs = [torch.from_numpy(np.asarray(a)) for a in arrays]
                return plugin_ops.reference(_op, inputs, attributes).numpy()

            onnx_op(op_type=registered, inputs=[PyCustomOpDef.dt_float] * count, outputs=[PyCustomOpDef.dt_float],
                    attrs=attrs)(body)
            names[(op.name, count)] = registered
    return names


_NAMES: dict | None = None


def reference_session(path: Path):
    """An ONNX Runtime session of the plugin graph at `path`, its custom nodes running the references."""
    import onnxruntime
    from onnxruntime_extensions import default_opset_domain, get_library_path

    global _NAMES
    _NAMES = _NAMES or _register()
    # Python ops take no float16 (onnxruntime-extensions): a float16 node runs on float32 casts, its output cast
    # back, which is what the kernels do (float32 math, float16 storage).
    model = nodes_in_float32(onnx.load(str(path)), lambda node, types: node.domain == plugin_ops.DOMAIN
                             and types[node.input[0]] == onnx.TensorProto.FLOAT16)
    for node in model.graph.node:
        if node.domain == plugin_ops.DOMAIN:
            node.op_type = _NAMES[(node.op_type, len(node.input))]
            node.domain = default_opset_domain()
    for opset in model.opset_import:
        if opset.domain == plugin_ops.DOMAIN:
            opset.domain = default_opset_domain()
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
