"""Export of the per-frame step and the backends behind `--backend`: each reproduces eager PyTorch."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx
import pytest
import torch

import mcnet_rt
from mcnet_rt.engine import aoti, cache, halves, load_backend, plugin_ops
from mcnet_rt.engine import onnxruntime as onnxruntime_backend
from mcnet_rt.engine.exported import ExportedStep
from mcnet_rt.engine.onnx_export import export_step
from mcnet_rt.errors import InputError
from mcnet_rt.keypoints import Keypoints
from mcnet_rt.config import DenseMotionConfig, GeneratorConfig, KeypointDetectorConfig, MCNetConfig, MemoryConfig
from mcnet_rt.pipeline.step import FrameStep

pytestmark = pytest.mark.slow  # exports, inductor and AOTInductor compiles

TINY = MCNetConfig(
    image_size=64, num_kp=5,
    keypoint_detector=KeypointDetectorConfig(block_expansion=8, max_features=64, num_blocks=3),
    generator=GeneratorConfig(block_expansion=8, max_features=32, num_down_blocks=2,
                              dense_motion=DenseMotionConfig(block_expansion=8, max_features=64, num_blocks=3),
                              memory=MemoryConfig(channels=16, spatial=8)))


@pytest.fixture(scope="session")
def small_step():
    torch.manual_seed(0)
    return FrameStep(mcnet_rt.build_model("small"))


@pytest.fixture(scope="session")
def tiny_step():
    """Every mechanism of the model with fewer layers, for the inductor backends: their compile time grows with
    the graph (the small preset's AOTInductor packages alone took 6 minutes of the suite on 2 cores)."""
    torch.manual_seed(0)
    return FrameStep(mcnet_rt.MCNet(TINY).eval())


@pytest.fixture(scope="session")
def standard_graphs(small_step, tmp_path_factory):
    return export_step(small_step, tmp_path_factory.mktemp("standard"), "standard")


@pytest.fixture(scope="session")
def half_step(small_step):
    return FrameStep(small_step.model, torch.float16)


@pytest.fixture(scope="session")
def half_standard_graphs(half_step, tmp_path_factory):
    return export_step(half_step, tmp_path_factory.mktemp("standard16"), "standard")


@pytest.fixture(scope="session")
def plugin_graphs(small_step, tmp_path_factory):
    return export_step(small_step, tmp_path_factory.mktemp("plugin"), "plugin")


@pytest.fixture(scope="session")
def half_plugin_graphs(half_step, tmp_path_factory):
    return export_step(half_step, tmp_path_factory.mktemp("plugin16"), "plugin")


def eager(step, inputs):
    with torch.no_grad():
        return step.render(*inputs)


def test_standard_graphs_use_standard_ops_only(standard_graphs):
    for path in standard_graphs.values():
        model = onnx.load(str(path))
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert "GridSample" in {n.op_type for n in onnx.load(str(standard_graphs["render"])).graph.node}


def test_onnxruntime_backend_equals_pytorch_at_any_batch(small_step, standard_graphs):
    """One graph runs batch 1 and 3 (the per-sample convolutions take a symbolic batch)."""
    step = onnxruntime_backend.load_graphs(standard_graphs, torch.device("cpu"))
    for input in onnx.load(str(standard_graphs["render"])).graph.input:
        assert input.type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    for n in (1, 3):
        (driving,), inputs = halves.example_inputs(small_step, batch=n, seed=n)
        with torch.no_grad():
            kp = small_step.keypoints(driving)
        got = step.keypoints(driving)
        torch.testing.assert_close(got.value, kp.value, atol=1e-4, rtol=0)
        # live smoothing runs between the halves: render takes keypoints it did not detect
        smoothed = Keypoints(kp.value * 0.9, kp.jacobian)
        torch.testing.assert_close(step.render(*smoothed, *inputs[2:]), eager(small_step, (*smoothed, *inputs[2:])),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(step(driving, *inputs[2:]), eager(small_step, inputs), atol=1e-4, rtol=0)


def value_types(path) -> dict[str, str]:
    """Element type name of every value of the ONNX graph at `path` (shape inference)."""
    model = onnx.load(str(path))
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return {name: onnx.TensorProto.DataType.Name(t) for name, t in types.items()}


def test_fp16_graphs_keep_keypoints_and_sampling_in_float32(half_standard_graphs):
    keypoints, render = (onnx.load(str(half_standard_graphs[n])) for n in ("keypoints", "render"))
    for path in half_standard_graphs.values():
        onnx.checker.check_model(str(path), full_check=True)
    types = {n: value_types(half_standard_graphs[n]) for n in ("keypoints", "render")}
    io = {v.name: types["render"][v.name] for v in (*render.graph.input, *render.graph.output)}
    assert {n for n, t in io.items() if t == "FLOAT16"} == {f"feature_{i}" for i in range(4)}
    assert {types["keypoints"][v.name] for v in (*keypoints.graph.input, *keypoints.graph.output)} == {"FLOAT"}
    assert any(types["keypoints"][n.input[0]] == "FLOAT16" for n in keypoints.graph.node
               if n.op_type == "Conv")  # the bulk
    softmax = [n for n in keypoints.graph.node if n.op_type == "Softmax"]  # the keypoints' soft-argmax
    samplers = [n for n in render.graph.node if n.op_type == "GridSample"]
    assert softmax and samplers
    assert {types["keypoints"][name] for n in softmax for name in (*n.input, *n.output)} == {"FLOAT"}
    assert {types["render"][name] for n in samplers for name in (*n.input, *n.output)} == {"FLOAT"}


def test_fp16_graphs_in_onnxruntime_err_no_more_than_eager_fp16(small_step, half_step, half_standard_graphs):
    """The fp16 graph computes the step: its error against float32 eager is at most twice eager fp16's own (CPU
    autocast), the rule of the kernels' reduced-precision tests. ONNX Runtime's CPU provider has float16 kernels
    only for data movement: it runs Conv, MatMul, Gemm, Softmax, norms and elementwise math in float32 through
    casts it inserts, so this checks the graph's function and types, not float16 arithmetic throughout."""
    runtime = onnxruntime_backend.load_graphs(half_standard_graphs, torch.device("cpu"))
    (driving,), inputs = halves.example_inputs(small_step, batch=1, seed=7)
    _, half_inputs = halves.example_inputs(half_step, batch=1, seed=7)
    expected = eager(small_step, inputs)
    eager_error = (eager(half_step, half_inputs) - expected).abs().max()
    assert (runtime.render(*half_inputs) - expected).abs().max() <= 2 * eager_error + 1e-4
    with torch.no_grad():
        assert (runtime.keypoints(driving).value - small_step.keypoints(driving).value).abs().max() <= 1e-3


def test_plugin_graph_has_the_plugin_nodes_and_their_numerics(small_step, plugin_graphs):
    from support.onnx_reference_ops import reference_session

    model = onnx.load(str(plugin_graphs["render"]))
    custom = {n.op_type for n in model.graph.node if n.domain == plugin_ops.DOMAIN}
    assert custom == {op.name for op in plugin_ops.PLUGIN_OPS}
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param  # dynamic batch
    session = reference_session(plugin_graphs["render"])
    for n in (1, 3):
        _, inputs = halves.example_inputs(small_step, batch=n, seed=n)
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
        out = torch.from_numpy(session.run(None, feed)[0])
        torch.testing.assert_close(out, eager(small_step, inputs), atol=1e-4, rtol=0)


def test_fp16_plugin_graph_runs_the_kernels_half_paths_within_eager_fp16_error(small_step, half_step,
                                                                              half_plugin_graphs):
    """Traced for the CUDA kernels (which run float16; the CPU twins where export runs do not): float16 data and
    weights, float32 coordinates, scales and mixes, as `plugin_ops.FLOAT32_INPUTS` says and the TensorRT plugins
    require. Its numerics (nodes as float32 references on float16 storage) err against float32 eager at most twice
    eager fp16's own error."""
    from support.onnx_reference_ops import reference_session

    types = value_types(half_plugin_graphs["render"])
    custom = [n for n in onnx.load(str(half_plugin_graphs["render"])).graph.node if n.domain == plugin_ops.DOMAIN]
    assert {n.op_type for n in custom} == {op.name for op in plugin_ops.PLUGIN_OPS}
    half_nodes = 0
    for node in custom:
        op = plugin_ops.BY_NAME[node.op_type]
        main = types[node.input[0]]
        half_nodes += main == "FLOAT16"
        for name, value in zip(op.inputs, node.input):
            assert types[value] == ("FLOAT" if name in plugin_ops.FLOAT32_INPUTS else main), (node.name, name)
        assert types[node.output[0]] == main
    assert half_nodes >= len(custom) - 1  # all but the warp of the float32 source image
    session = reference_session(half_plugin_graphs["render"])
    for n in (1, 3):
        _, inputs = halves.example_inputs(small_step, batch=n, seed=7)
        _, half_inputs = halves.example_inputs(half_step, batch=n, seed=7)
        expected = eager(small_step, inputs)
        eager_error = (eager(half_step, half_inputs) - expected).abs().max()
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), half_inputs)}
        out = torch.from_numpy(session.run(None, feed)[0])
        assert (out - expected).abs().max() <= 2 * eager_error + 1e-4


def test_compiled_backend_equals_eager(tiny_step):
    (driving,), inputs = halves.example_inputs(tiny_step, batch=1, seed=5)
    expected = eager(tiny_step, inputs)
    step = load_backend("compiled", FrameStep(tiny_step.model))
    with torch.no_grad():
        torch.testing.assert_close(step.render(*inputs), expected, atol=1e-4, rtol=0)


def test_aoti_packages_load_in_a_fresh_process_at_any_batch(tiny_step, tmp_path, monkeypatch):
    """The packages run in a new interpreter that never imports mcnet_rt (the CPU graph is plain aten), at batch
    1 and 3 from one build; a second load finds them in the engine cache instead of compiling again."""
    monkeypatch.setenv("MCNET_RT_ENGINE_CACHE", str(tmp_path / "engines"))
    builds = []

    def build(step, folder):  # CI's compile time: O0
        builds.append(folder)
        return aoti.packages(step, folder, wrapper_opt_level="O0")

    paths = cache.halves_files(tiny_step, "aoti", build, None)
    assert cache.halves_files(FrameStep(tiny_step.model), "aoti", build, None) == paths and len(builds) == 1
    assert paths["keypoints"].parent.parent == tmp_path / "engines" and not builds[0].exists()
    cases = []
    for batch in (1, 3):
        (driving,), inputs = halves.example_inputs(tiny_step, batch=batch, seed=6)
        cases.append({"driving": driving, "inputs": inputs, "expected": eager(tiny_step, inputs),
                      "kp": tiny_step.keypoints(driving).value.detach()})
    torch.save(cases, tmp_path / "cases.pt")
    script = f"""
import sys, torch
keypoints = torch._inductor.aoti_load_package({str(paths['keypoints'])!r})
render = torch._inductor.aoti_load_package({str(paths['render'])!r})
for case in torch.load({str(tmp_path / 'cases.pt')!r}):
    assert (keypoints(case["driving"])[0] - case["kp"]).abs().max() <= 1e-4
    print((render(*case["inputs"]) - case["expected"]).abs().max().item())
assert "mcnet_rt" not in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    differences = [float(line) for line in result.stdout.strip().splitlines()[-2:]]
    assert len(differences) == 2 and max(differences) <= 1e-4


def test_exported_backends_are_built_once_into_the_engine_cache_and_leave_nothing_in_tmp(small_step, standard_graphs,
                                                                                        tmp_path, monkeypatch):
    from mcnet_rt.engine import onnx_export
    from mcnet_rt.engine.cache import step_key as cache_key

    cache, scratch = tmp_path / "cache", tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("MCNET_RT_ENGINE_CACHE", str(cache))
    monkeypatch.setattr("tempfile.tempdir", str(scratch))  # where a run's temporary folders would go
    exports = []

    def export(step, folder, flavour):  # this step's export, made once for the whole file (minutes on 2 cores)
        exports.append(folder)
        assert step.model is small_step.model and flavour == "standard"
        return {name: Path(shutil.copy(path, folder)) for name, path in standard_graphs.items()}

    monkeypatch.setattr(onnx_export, "export_step", export)
    _, inputs = halves.example_inputs(small_step, batch=2, seed=3)
    results = []
    for _ in range(2):  # a second run with the same model and settings: no export, the same graphs
        with torch.no_grad():
            results.append(load_backend("onnxruntime", FrameStep(small_step.model)).render(*inputs))
    assert len(exports) == 1 and not exports[0].exists()  # built under a temporary name, then renamed
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)
    torch.testing.assert_close(results[0], eager(small_step, inputs), atol=1e-4, rtol=0)
    (entry,) = cache.iterdir()
    assert entry.name == cache_key(small_step, "onnx-standard") and entry.name.startswith("onnx-standard-")
    assert sorted(p.name for p in entry.iterdir()) == ["keypoints.onnx", "render.onnx"]
    assert [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")] == []
    others = [cache_key(FrameStep(small_step.model, relative=False), "onnx-standard"),
              cache_key(FrameStep(small_step.model, torch.float16), "onnx-standard"),
              cache_key(FrameStep(small_step.model), "onnx-plugin"), cache_key(FrameStep(small_step.model), "aoti")]
    assert len({entry.name, *others}) == 5  # other settings: other entries


def test_a_cache_entry_published_first_by_another_process_is_used_and_ours_discarded(tmp_path, monkeypatch):
    from mcnet_rt.io.atomic import atomic_directory

    monkeypatch.setenv("MCNET_RT_ENGINE_CACHE", str(tmp_path))

    def build(folder):  # while this build runs, another process publishes the same entry
        (folder / "keypoints.onnx").write_text("ours")
        with atomic_directory(tmp_path / "key", cache=True) as theirs:
            (theirs / "keypoints.onnx").write_text("theirs")

    entry = cache.cached_folder("key", build)
    assert (entry / "keypoints.onnx").read_text() == "theirs" and os.listdir(tmp_path) == ["key"]
    assert cache.cached_folder("key", lambda folder: pytest.fail("built again")) == entry

    def fails(folder):
        (folder / "keypoints.onnx").write_text("half")
        raise InputError("export failed")

    with pytest.raises(InputError, match="export failed"):
        cache.cached_folder("other", fails)
    assert os.listdir(tmp_path) == ["key"]  # a failed build leaves no entry and no temporary


def test_concurrent_builders_of_one_entry_use_their_own_temporaries_and_publish_one(tmp_path, monkeypatch):
    """Two builds of the same entry at once (as two runs of one model would): each fills a temporary of its own,
    one is published whole, the other discarded, and both callers get the published entry."""
    monkeypatch.setenv("MCNET_RT_ENGINE_CACHE", str(tmp_path))
    both_building = threading.Barrier(2)
    folders = []

    def build(folder):
        folders.append(folder)
        (folder / "keypoints.onnx").write_text(folder.name)
        both_building.wait(timeout=60)

    with ThreadPoolExecutor(2) as pool:
        entries = list(pool.map(lambda _: cache.cached_folder("key", build), range(2)))
    assert len(set(folders)) == 2 and entries == [tmp_path / "key"] * 2
    assert (tmp_path / "key" / "keypoints.onnx").read_text() in {folder.name for folder in folders}
    assert os.listdir(tmp_path) == ["key"]  # the other build's temporary is gone


def test_exporting_onnx_loads_no_face_stack():
    """The exporter and the backends table in a fresh interpreter: no face detection, session or MediaPipe."""
    script = ("import sys, mcnet_rt.engine.onnx_export\n"
              "from mcnet_rt.engine.backends import BACKENDS\n"
              "print([m for m in ('mcnet_rt.faces', 'mcnet_rt.pipeline.session', 'mediapipe') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.fixture
def engine_builds(tmp_path, monkeypatch):
    """`tensorrt.cached_engine` on a stand-in graph with TensorRT's build replaced by a counter (TensorRT for RTX
    builds real engines in the test above; this one is about the cache): returns (get engine, builds so far)."""
    from types import SimpleNamespace

    from mcnet_rt.engine import tensorrt

    graph = tmp_path / "render.onnx"
    graph.write_bytes(b"graph")
    builds = []

    def build_engine(trt, path, **build):
        builds.append(path)
        return f"engine {len(builds)}".encode()

    monkeypatch.setattr(tensorrt, "build_engine", build_engine)
    trt = SimpleNamespace(__name__="tensorrt_rtx", __version__="0")
    return (lambda: tensorrt.cached_engine(trt, graph, tmp_path / "engines")), builds


@pytest.mark.parametrize("record", [None, "", '{"gpu": "ahead-', "[]", '{"gpu": "ahead-of-time RTX"}'])
def test_an_engine_without_a_readable_record_is_a_cache_miss(engine_builds, tmp_path, record):
    get, builds = engine_builds
    assert get() == b"engine 1" and get() == b"engine 1" and len(builds) == 1
    (engine,) = (tmp_path / "engines").glob("*.engine")
    if record is None:
        engine.with_suffix(".json").unlink()
    else:
        engine.with_suffix(".json").write_text(record)
    assert get() == b"engine 2" and len(builds) == 2  # built again, not a FileNotFoundError or JSONDecodeError
    assert json.loads(engine.with_suffix(".json").read_text())["gpu"].startswith("ahead-of-time")
    assert get() == b"engine 2" and len(builds) == 2
    assert sorted(p.suffix for p in (tmp_path / "engines").iterdir()) == [".engine", ".json"]


def test_concurrent_builders_of_one_engine_never_share_a_temporary(engine_builds, tmp_path, monkeypatch):
    from mcnet_rt.engine import tensorrt
    from mcnet_rt.io.atomic import atomic_output

    get, builds = engine_builds
    both_built = threading.Barrier(2)
    temporaries = []
    build = tensorrt.build_engine

    def build_together(*args, **kwargs):
        engine = build(*args, **kwargs)
        both_built.wait(timeout=60)  # both publish at the same moment
        return engine

    @contextlib.contextmanager
    def recorded(path, **kwargs):
        with atomic_output(path, **kwargs) as tmp:
            temporaries.append(tmp)
            yield tmp

    monkeypatch.setattr(tensorrt, "build_engine", build_together)
    monkeypatch.setattr(tensorrt, "atomic_output", recorded)
    with ThreadPoolExecutor(2) as pool:
        engines = set(pool.map(lambda _: get(), range(2)))
    assert len(builds) == 2 and len(temporaries) == len(set(temporaries)) == 4
    (engine,) = (tmp_path / "engines").glob("*.engine")
    assert engine.read_bytes() in engines == {b"engine 1", b"engine 2"}
    assert sorted(p.suffix for p in (tmp_path / "engines").iterdir()) == [".engine", ".json"]  # no temporaries


@pytest.mark.parametrize("graphs", ["plugin_graphs", "half_plugin_graphs"])
def test_tensorrt_rtx_builds_engines_from_the_plugin_graphs_with_our_plugins(graphs, request):
    """Parsing and building need no GPU with TensorRT for RTX; running the engine does (not here). The network is
    strongly typed: the fp16 graph builds only if every plugin accepts the types it was traced with."""
    from mcnet_rt.engine import tensorrt

    paths = request.getfixturevalue(graphs)
    trt = tensorrt.import_tensorrt("tensorrt_rtx")
    _, network, _parser = tensorrt.parse(trt, paths["render"])
    plugins = [network.get_layer(i) for i in range(network.num_layers)
               if network.get_layer(i).type == trt.LayerType.PLUGIN_V3]
    custom = [n for n in onnx.load(str(paths["render"])).graph.node if n.domain == plugin_ops.DOMAIN]
    assert len(plugins) == len(custom) > 0
    for path in paths.values():
        assert len(tensorrt.build_engine(trt, path, max_batch=4, target="SM89")) > 1000


def test_tensorrt_errors_name_the_problem(tmp_path, plugin_graphs):
    from mcnet_rt.engine import tensorrt
    from mcnet_rt.errors import InputError

    with pytest.raises(InputError, match="TensorRT is not installed"):
        tensorrt.import_tensorrt("tensorrt")  # full TensorRT has no PyPI wheel: not installed here
    trt = tensorrt.import_tensorrt("tensorrt_rtx")
    tensorrt.tensorrt_plugins.register(trt)
    model = onnx.load(str(plugin_graphs["render"]))
    next(n for n in model.graph.node if n.domain == plugin_ops.DOMAIN).op_type = "Unknown"
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(InputError, match=r"mcnet_rt::Unknown is not registered .*mcnet_rt::WarpFeatures"):
        tensorrt.check_plugins(trt, tmp_path / "foreign.onnx")
    engine = tmp_path / "render-0.engine"
    engine.with_suffix(".json").write_text('{"gpu": "NVIDIA GeForce RTX 4090", "capability": "8.9"}')
    with pytest.raises(InputError, match="engine built for another GPU"):
        tensorrt.check_engine_gpu(engine, tensorrt.engine_record(engine))


def test_engine_cache_key_covers_gpu_version_plugins_and_graph(plugin_graphs):
    from mcnet_rt.engine import tensorrt

    trt = tensorrt.import_tensorrt("tensorrt_rtx")
    gpu = {"gpu": "NVIDIA GeForce RTX 4090", "capability": "8.9"}
    key = tensorrt.engine_key(trt, plugin_graphs["render"], gpu)
    assert key == tensorrt.engine_key(trt, plugin_graphs["render"], dict(gpu))
    assert key != tensorrt.engine_key(trt, plugin_graphs["render"], {**gpu, "capability": "12.0"})
    assert key != tensorrt.engine_key(trt, plugin_graphs["keypoints"], gpu)


def test_export_command_writes_both_graphs_or_nothing(tmp_path, capsys, monkeypatch):
    from mcnet_rt.cli import main
    from mcnet_rt.engine import onnx_export
    from mcnet_rt.errors import InputError

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.onnx").write_bytes(b"")
    assert main(["export", "--untrained", "small", "-o", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    export = onnx_export._export

    def render_fails(module, inputs, names, outputs, path, flavour):  # after keypoints.onnx was written
        if path.name == "render.onnx":
            raise InputError("render failed")
        export(module, inputs, names, outputs, path, flavour)

    with monkeypatch.context() as patch:
        patch.setattr(onnx_export, "ops_loaded", lambda: False)
        assert main(["export", "--untrained", "small", "--ops", "plugin", "-o", str(tmp_path / "no_ops")]) == 2
    assert "traces the mcnet_rt ops: mcnet_rt's ops library" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        patch.setattr(onnx_export, "_export", render_fails)
        assert main(["export", "--untrained", "small", "-o", str(tmp_path / "failed")]) == 2
    assert "render failed" in capsys.readouterr().err and list(tmp_path.iterdir()) == [tmp_path / "taken"]
    assert main(["export", "--untrained", "small", "--ops", "plugin", "--precision", "fp16", "-o",
                 str(tmp_path / "graphs")]) == 0
    assert sorted(p.name for p in (tmp_path / "graphs").iterdir()) == ["keypoints.onnx", "render.onnx"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    onnx.checker.check_model(str(tmp_path / "graphs" / "render.onnx"))


@pytest.fixture
def immutable(tmp_path):
    """Folders made immutable (chattr +i: not even root can add, remove or rename their entries), for the test."""
    made = []

    def make(folder):
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here (needs root and a file system that supports it)")
        made.append(folder)
        return folder

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_export_refuses_a_folder_it_cannot_write_or_replace_before_any_work(tmp_path, capsys, monkeypatch,
                                                                          immutable):
    from mcnet_rt import cli
    from mcnet_rt.cli import export

    monkeypatch.setattr(export, "model_from_args", lambda *args: pytest.fail("the model was built before the check"))
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "kept").mkdir()
    immutable(locked)  # nothing can be written in it
    immutable(tmp_path / "kept")  # an empty output folder that cannot be removed or replaced
    for output in (locked / "graphs", tmp_path / "kept"):
        assert cli.main(["export", "--untrained", "small", "-o", str(output)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"mcnet-rt: error: {output}: cannot write the output folder there (Operation not "
                       "permitted)"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "locked"] and not any(locked.iterdir())


@torch.no_grad()
def test_onnxruntime_reproduces_the_released_code_on_the_equivalence_fixture(official_checkpoint, tmp_path):
    """The vox-256 fixture once: ONNX Runtime's keypoints and prediction against the released code's arrays."""
    from support.official_fixture import fixture_arrays, image_tensor

    arrays = fixture_arrays()
    model = mcnet_rt.load(official_checkpoint)
    step = FrameStep(model, relative=False)  # absolute: the generator gets the released driving keypoints
    runtime = load_backend("onnxruntime", step, work_dir=tmp_path)
    source = image_tensor(arrays["source"])
    from mcnet_rt.pipeline.step import motion_reference, prepare_source
    prepared = prepare_source(model, source)
    inputs = step.inputs(prepared, motion_reference(model, prepared, source))
    kp = runtime.keypoints(image_tensor(arrays["driving"]))
    assert (kp.value[0] - torch.from_numpy(arrays["kp_driving_value"])).abs().max() <= 1e-4
    released = Keypoints(torch.from_numpy(arrays["kp_driving_value"])[None],
                         torch.from_numpy(arrays["kp_driving_jacobian"])[None])
    prediction = runtime.render(*released, *inputs)
    assert (prediction[0] - torch.from_numpy(arrays["prediction"])).abs().max() <= 1e-4


def test_exported_step_repeats_shared_sources_to_the_driving_batch():
    calls = []

    def render(*inputs):
        calls.append([tuple(t.shape) for t in inputs])
        return inputs[0] * 2

    step = ExportedStep(lambda d: (d, d), render, device=torch.device("cpu"))
    kp = torch.arange(3.0).view(3, 1)
    out = step.render(kp, torch.ones(1, 2))
    assert calls == [[(3, 1), (3, 2)]] and torch.equal(out, kp * 2)


def plugin_node_cases():
    """(plugin op, attributes, inputs) of every plugin node, shaped as the render graph feeds them (x shared by the
    batch where the memory is one map for all)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    cases = [("WarpFeatures", {}, [rand(2, 4, 8, 8), rand(2, 5, 5, 2) * 2 - 1, rand(2, 1, 5, 5)]),
             ("WarpFeatures", {}, [rand(2, 4, 8, 8), rand(2, 5, 5, 2) * 2 - 1]),
             ("SparseWarp", {}, [rand(2, 3, 8, 8), rand(2, 3, 8, 8, 2) * 2.2 - 1.1]),
             ("ModulatedConv2d", {"demodulate": 1, "eps": 1e-8}, [rand(1, 4, 6, 6), rand(5, 4, 3, 3) / 6,
                                                                  rand(3, 4) + 0.5]),
             ("ModulatedConv2d", {"demodulate": 0, "eps": 1e-8}, [rand(3, 4, 6, 6), rand(5, 4, 3, 3) / 6,
                                                                  rand(3, 4) + 0.5]),
             ("DynamicConv2d", {}, [rand(3, 4, 6, 6), rand(2, 5, 4, 3, 3) / 6, rand(2, 5), rand(3, 2).softmax(1)]),
             ("MemoryAttention", {"scale": 0.25}, [rand(2, 8, 6, 6), rand(2, 8, 3, 3), rand(2, 8, 3, 3)])]
    return [pytest.param(plugin_ops.BY_NAME[name], attributes, inputs, id=f"{name}-{i}")
            for i, (name, attributes, inputs) in enumerate(cases)]


@pytest.mark.parametrize("op, attributes, inputs", plugin_node_cases())
def test_plugin_enqueue_writes_into_tensorrts_output_and_allocates_nothing(op, attributes, inputs):
    """The plugins' enqueue body on host buffers (TensorRT cannot run here: the tensors' addresses stand in for its
    device pointers): the node's output lands in TensorRT's buffer, equal to the op's reference, its temporaries
    in TensorRT's workspace, and nothing is allocated (the profiler sees every allocation, C++ ones included)."""
    from types import SimpleNamespace

    from torch.profiler import ProfilerActivity, profile

    from mcnet_rt.engine import tensorrt_plugins

    def desc(t):
        return SimpleNamespace(dims=tuple(t.shape), type=SimpleNamespace(name="FLOAT"))

    expected = plugin_ops.reference(op, inputs, attributes)
    assert op.output_shape([tuple(t.shape) for t in inputs]) == list(expected.shape)  # what the plugin tells TensorRT
    output = torch.full(expected.shape, float("nan"))
    elements = plugin_ops.workspace_elements(op, attributes, [tuple(t.shape) for t in inputs])
    workspace = torch.full((elements,), float("nan"))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        tensorrt_plugins.enqueue_node(op, attributes, [desc(t) for t in inputs], [desc(output)],
                                      [t.data_ptr() for t in inputs], [output.data_ptr()],
                                      workspace.data_ptr() if elements else 0, device="cpu")
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    assert [(e.name, e.cpu_memory_usage) for e in profiler.events() if e.cpu_memory_usage] == []
    assert not elements or not workspace.isnan().all()  # the demodulation, mixed biases or log-sum-exp were there


def test_into_ops_refuse_a_wrong_output_or_a_short_workspace():
    query, key = torch.rand(2, 8, 6, 6), torch.rand(2, 8, 3, 3)
    with pytest.raises(RuntimeError, match=r"memory_attention_into: out has shape \(2, 8, 6, 5\), the output's is "
                                           r"\(2, 8, 6, 6\)"):
        torch.ops.mcnet_rt.memory_attention_into(query, key, key, 0.25, torch.empty(2, 8, 6, 5), torch.empty(72))
    with pytest.raises(RuntimeError, match="memory_attention_into: workspace has 71 elements, needs 72"):
        torch.ops.mcnet_rt.memory_attention_into(query, key, key, 0.25, torch.empty_like(query), torch.empty(71))
    with pytest.raises(RuntimeError, match=r"sparse_warp_into: out \(float64, cpu\) must be float32 on cpu"):
        torch.ops.mcnet_rt.sparse_warp_into(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4, 2),
                                            torch.empty(1, 2, 3, 4, 4, dtype=torch.float64))


@pytest.mark.cuda
@pytest.mark.parametrize("op, attributes, inputs", plugin_node_cases())
def test_plugin_enqueue_on_the_gpu_writes_into_its_buffers_without_allocating(op, attributes, inputs):
    """The same on device memory, through `__cuda_array_interface__` and the CUDA kernels, as TensorRT calls it;
    the caching allocator counts allocations (not yet run on a GPU)."""
    from types import SimpleNamespace

    from mcnet_rt.engine import tensorrt_plugins

    def desc(t):
        return SimpleNamespace(dims=tuple(t.shape), type=SimpleNamespace(name="FLOAT"))

    inputs = [t.cuda() for t in inputs]
    expected = plugin_ops.reference(op, inputs, attributes)
    output = torch.full(expected.shape, float("nan"), device="cuda")
    elements = plugin_ops.workspace_elements(op, attributes, [tuple(t.shape) for t in inputs])
    workspace = torch.full((elements,), float("nan"), device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    tensorrt_plugins.enqueue_node(op, attributes, [desc(t) for t in inputs], [desc(output)],
                                  [t.data_ptr() for t in inputs], [output.data_ptr()],
                                  workspace.data_ptr() if elements else 0)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before
    torch.testing.assert_close(output, expected, atol=1e-4, rtol=1e-4)
