"""`mcnet-rt export`: ONNX graphs of the per-frame step's two halves, `keypoints.onnx` and `render.onnx`.

Two flavours: "standard" (ops run as their PyTorch references: GridSample, Conv with run-time weights,
MatMul/Softmax — any ONNX runtime) and "plugin" (ops run as the `mcnet_rt` kernels: one custom-domain node per
public op, for TensorRT with our plugins). Both take any batch: every input shares one dynamic batch dimension
(see `halves.batched`); the references' per-sample convolutions take a symbolic batch (`ops.modulated_conv`).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InputError
from ..io.atomic import atomic_directory
from ..ops import use_impl
from ..ops._native import not_built_message, ops_loaded, traced_for
from ..pipeline.step import FrameStep
from . import cache, halves, plugin_ops

FLAVOURS = ("standard", "plugin")
OPSET = 18  # GridSample is safe in TensorRT at opsets 16-18 (reported wrong at 20)
DTYPES = (torch.float32, torch.float16)


def _export(module: torch.nn.Module, inputs: tuple, names: tuple[str, ...], outputs: tuple[str, ...], path: Path,
            flavour: str) -> None:
    """One half with its constant subgraphs folded (TensorRT's parser takes e.g. ReduceMean's axes only as
    initializers). Folded here rather than by the exporter's `optimize`, whose later passes turn float16 weight
    casts into float32 initializers that a float16 Conv rejects."""
    import onnx
    import onnxscript

    table = plugin_ops.translation_table() if flavour == "plugin" else None
    with contextlib.redirect_stdout(None):  # the exporter prints its progress
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET, input_names=list(names),
                                    output_names=list(outputs), dynamic_shapes=halves.dynamic_batch(inputs),
                                    custom_translation_table=table, optimize=False, verbose=False)
    model = onnxscript.ir.serde.deserialize_model(program.model_proto)
    onnxscript.optimizer.fold_constants(model)
    onnxscript.optimizer.remove_unused_nodes(model)
    onnx.save(float32_mixed_nodes(onnxscript.ir.serde.serialize_model(model)), str(path))


# Ops whose ONNX definition takes one element type for all inputs, where eager PyTorch takes float16 data with
# float32 weights (autocast leaves them alone): the kernel computes in float32 and returns float16.
ONE_TYPE_OPS = ("InstanceNormalization",)


def float32_mixed_nodes(model):
    """Each `ONE_TYPE_OPS` node with float16 and float32 inputs runs as eager runs it: in float32 between casts."""
    from onnx import TensorProto

    return nodes_in_float32(model, lambda node, types: node.op_type in ONE_TYPE_OPS and {
        TensorProto.FLOAT16, TensorProto.FLOAT} <= {types.get(name) for name in node.input if name})


def nodes_in_float32(model, chosen):
    """Each node for which `chosen(node, types)` holds (`types`: value name -> ONNX element type) runs on float32
    casts of its float16 inputs, its outputs cast back to float16."""
    from onnx import TensorProto, helper, shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    nodes = []
    for node in model.graph.node:
        if not chosen(node, types):
            nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if types.get(name) == TensorProto.FLOAT16:
                node.input[k] = f"{name}.float32_for.{node.name}"
                nodes.append(helper.make_node("Cast", [name], [node.input[k]], to=TensorProto.FLOAT))
        outputs = list(node.output)
        for k, name in enumerate(outputs):
            node.output[k] = f"{name}.float32"
        nodes.append(node)
        nodes.extend(helper.make_node("Cast", [f"{name}.float32"], [name], to=TensorProto.FLOAT16) for name in outputs)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def export_step(step: FrameStep, output_dir: Path, flavour: str = "standard") -> dict[str, Path]:
    """Write keypoints.onnx and render.onnx for `step` at its precision into `output_dir` and check them with
    onnx.checker.

    `step.dtype` float16 gives mixed-precision graphs traced from the step under the autocast of eager
    fp16 (`precision="fp16"`): float16 for the bulk (convolutions, matmuls), float32 where the step keeps it (the
    regions `mcnet_rt.precision` lists: keypoint soft-argmax, sampling coordinates and the dense-motion mask, motion
    transfer). The standard graph samples in float32 (autocast's GridSample); the plugin graph runs the kernels'
    float16 paths as eager does on a GPU (float16 data, float32 coordinates, scales and mixes, float32
    accumulation). Their float16 inputs are the encoder features `feature_*` (as `prepare_source` makes them at
    fp16); the driving and source images, keypoints, movement scale and the prediction stay float32.
    """
    import onnx

    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, not {flavour!r}")
    if step.dtype not in DTYPES:
        raise ValueError(f"ONNX graphs are exported in float32 or float16 mixed precision, not {step.dtype}")
    if flavour == "plugin" and not ops_loaded():
        raise InputError(f'ops="plugin" traces the mcnet_rt ops: {not_built_message()}', options=("ops",))
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    # The plugin graph runs the CUDA kernels (in TensorRT): traced here for them, it takes their element types.
    traced = traced_for("cuda") if flavour == "plugin" else contextlib.nullcontext()
    with torch.no_grad(), use_impl("kernel" if flavour == "plugin" else "reference"), traced:
        for half in halves.traced(step):
            paths[half.name] = output_dir / f"{half.name}.onnx"
            _export(half.module, half.inputs, half.input_names, half.output_names, paths[half.name], flavour)
    for path in paths.values():
        onnx.checker.check_model(str(path), full_check=flavour == "standard")
    return paths


def export_folder(output: str | os.PathLike, make_step: Callable[[], FrameStep], flavour: str = "standard"
                  ) -> dict[str, Path]:
    """Publish both graphs of the step `make_step()` gives as the folder `output`, whole or not at all: the folder
    must not exist or be empty, which is checked before `make_step` runs (see `io.atomic.atomic_directory`)."""
    with atomic_directory(output) as partial:
        written = export_step(make_step(), partial, flavour)
    return {name: Path(output) / path.name for name, path in written.items()}


def cached_graphs(step: FrameStep, flavour: str, work_dir: Path | None = None) -> dict[str, Path]:
    """The step's graphs of `flavour` for a backend that runs them, exported into `work_dir`, or found in (or else
    exported into) the engine cache. They take float32 or float16 steps only."""
    if step.dtype not in DTYPES:
        raise InputError('ONNX Runtime and TensorRT run fp32 or fp16 graphs, not bfloat16: use precision="fp32" or '
                         '"fp16", or backend="eager", "compiled" or "aoti"', options=("precision", "backend"))
    return cache.halves_files(step, f"onnx-{flavour}", lambda s, folder: export_step(s, folder, flavour), work_dir)
