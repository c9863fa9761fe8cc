"""The `tensorrt` backend: engines built from the plugin graphs with the `mcnet_rt` plugins, cached on disk.

The cache key holds the GPU (name and compute capability), the TensorRT version, the plugin build (the ops
library `_ops.so` and the plugin code) and the graph, so a stale or foreign engine is never loaded. The build
works without a GPU with TensorRT for RTX (ahead of time, for the RTX targets); running an engine needs a GPU and
has not been tried here.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import torch

from ..errors import InputError
from ..io.atomic import atomic_output
from ..pipeline.step import FrameStep
from . import onnx_export, plugin_ops, tensorrt_plugins
from .cache import cache_root, digest
from .exported import ExportedStep

MODULES = ("tensorrt", "tensorrt_rtx")
RTX_TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120")  # what TensorRT for RTX runs on (not Hopper)


def import_tensorrt(preferred: str | None = None) -> ModuleType:
    """The TensorRT Python module: full TensorRT 10/11 first, else TensorRT for RTX."""
    import importlib

    for name in (preferred,) if preferred else MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name == "tensorrt_rtx":
            _link_rtx_library()
        return module
    raise InputError("TensorRT is not installed: install `tensorrt-rtx-cu13` (TensorRT for RTX, from PyPI) or "
                     "full TensorRT 10/11 from NVIDIA's package index, or choose another backend",
                     options=("backend",))


def _link_rtx_library() -> None:
    """The ONNX parser loads `libtensorrt_rtx.so` when it adds a plugin layer, and the wheel ships only
    `libtensorrt_rtx.so.1`: without the link the process aborts."""
    import importlib.util

    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(spec.submodule_search_locations[0])
    link = folder / "libtensorrt_rtx.so"
    if not link.exists() and (folder / "libtensorrt_rtx.so.1").exists():
        try:
            link.symlink_to("libtensorrt_rtx.so.1")
        except OSError as error:
            raise InputError(f"{link}: TensorRT for RTX needs this link to libtensorrt_rtx.so.1 and it cannot be "
                             f"made ({error}); create it once with write access") from error


def plugin_build_hash() -> str:
    """The ops library the plugins run and the plugin code: an engine serialises plugin fields that only they
    interpret."""
    from .. import ops  # noqa: F401
    from ..ops import _native
    library = _native.OPS_LIBRARY.read_bytes() if _native.ops_loaded() else b"no _ops.so"
    return digest(library, Path(tensorrt_plugins.__file__).read_bytes(), Path(plugin_ops.__file__).read_bytes())


def gpu_identity(target: str | None = None) -> dict:
    """This machine's GPU, or a TensorRT-for-RTX ahead-of-time target when there is none."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return {"gpu": torch.cuda.get_device_name(), "capability": f"{major}.{minor}"}
    return {"gpu": f"ahead-of-time {target or 'RTX'}", "capability": target or "none"}


def engine_key(trt: ModuleType, graph: Path, gpu: dict) -> str:
    return digest(json.dumps(gpu, sort_keys=True).encode(), trt.__name__.encode(), trt.__version__.encode(),
                   plugin_build_hash().encode(), graph.read_bytes())


def check_plugins(trt: ModuleType, graph: Path) -> None:
    """Every custom node of `graph` has a registered creator; the error lists those that are."""
    import onnx

    registered = {(c.name, c.plugin_namespace) for c in trt.get_plugin_registry().all_creators}
    for node in onnx.load(str(graph), load_external_data=False).graph.node:
        if node.domain and node.domain != "ai.onnx" and (node.op_type, node.domain) not in registered:
            names = ", ".join(sorted(f"{ns}::{n}" if ns else n for n, ns in registered))
            raise InputError(f"{graph}: plugin {node.domain}::{node.op_type} is not registered with TensorRT "
                             f"(registered: {names})")


def parse(trt: ModuleType, graph: Path):
    """(builder, network, parser) for `graph` with the plugins registered (the parser owns the network's
    weights: keep it alive while the network is used)."""
    tensorrt_plugins.register(trt)
    check_plugins(trt, graph)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: every layer runs in the type the graph gives it, so an fp16 graph's float32 regions stay
    # float32 and its plugin nodes get the types they were traced with.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph.read_bytes(), str(graph)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{graph}: TensorRT cannot parse it: {errors}")
    return builder, network, parser


def build_engine(trt: ModuleType, graph: Path, max_batch: int = 8, target: str | None = None) -> bytes:
    """A serialized engine for `graph` with a batch range 1..max_batch; `target` is an RTX compute capability
    (e.g. "SM89") for a TensorRT-for-RTX build ahead of time."""
    builder, network, _parser = parse(trt, graph)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape[0] == -1:
            profile.set_shape(tensor.name, [1, *shape[1:]], [1, *shape[1:]], [max_batch, *shape[1:]])
    config.add_optimization_profile(profile)
    if target:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, target), 0)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise InputError(f"{graph}: TensorRT could not build an engine (see its log above)")
    return bytes(engine)


def cached_engine(trt: ModuleType, graph: Path, cache_dir: Path, **build) -> bytes:
    """The engine for `graph` on this GPU from `cache_dir`, built and stored on a miss. An engine without a
    readable record (missing, cut short, damaged) is a miss: it is built again and both are replaced."""
    gpu = gpu_identity(build.get("target"))
    path = cache_dir / f"{graph.stem}-{engine_key(trt, graph, gpu)}.engine"
    record = engine_record(path)
    if record is not None and path.exists():
        check_engine_gpu(path, record)
        return path.read_bytes()
    engine = build_engine(trt, graph, **build)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The record first: an engine is only ever seen complete and with its record. Each is renamed into place from
    # a temporary name of this build's own, so concurrent builders of one engine never write the same file.
    with atomic_output(path.with_suffix(".json"), cache=True) as tmp:
        tmp.write_text(json.dumps({**gpu, "tensorrt": trt.__version__, "module": trt.__name__,
                                   "plugins": plugin_build_hash()}, indent=2))
    with atomic_output(path, cache=True) as tmp:
        tmp.write_bytes(engine)
    return engine


def engine_record(engine_path: Path) -> dict | None:
    """The record stored beside an engine (the GPU it was built for), or None where it is missing or unreadable."""
    try:
        record = json.loads(engine_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"gpu", "capability"} <= record.keys() else None


def check_engine_gpu(engine_path: Path, record: dict) -> None:
    """Refuse an engine whose record names another GPU than this one."""
    here = gpu_identity()
    if (record["gpu"], record["capability"]) != (here["gpu"], here["capability"]) \
            and not record["gpu"].startswith("ahead-of-time"):
        raise InputError(f"{engine_path}: engine built for another GPU ({record['gpu']}, sm {record['capability']}); "
                         f"this one is {here['gpu']}, sm {here['capability']}: rebuild it here")


class _EngineRunner:
    """Runs one engine on PyTorch's current stream with torch tensors as I/O (needs a GPU; not run here)."""

    def __init__(self, trt: ModuleType, engine: bytes):
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def __call__(self, *inputs: torch.Tensor):
        inputs = [t.contiguous() for t in inputs]  # held until the engine has run: it reads their memory
        for name, tensor in zip(self.inputs, inputs):
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = [torch.empty(tuple(self.context.get_tensor_shape(n)), device="cuda",
                               dtype=tensorrt_plugins.torch_dtype(self.engine.get_tensor_dtype(n)))
                   for n in self.outputs]
        for name, tensor in zip(self.outputs, outputs):
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def load(step: FrameStep, work_dir: Path | None = None, max_batch: int = 8) -> ExportedStep:
    """The step as TensorRT engines of its plugin graphs (exported into `work_dir`, or found in, or else exported
    into, the engine cache), each engine cached there too; TensorRT and the GPU are checked before any export."""
    trt = import_tensorrt()
    if step.device.type != "cuda":
        raise InputError('backend="tensorrt" runs on a CUDA GPU; this run is on the CPU', options=("backend", "device"))
    runners = {name: _EngineRunner(trt, cached_engine(trt, graph, cache_root(), max_batch=max_batch))
               for name, graph in onnx_export.cached_graphs(step, "plugin", work_dir).items()}
    return ExportedStep(runners["keypoints"], runners["render"], step.device)
