"""The CUDA plumbing of the TensorRT backend, run on a GPU -- not TensorRT, which cannot be installed
here. `CudaIo` is the backend's own buffer/stream/graph code (pinned host buffers, device buffers,
async copies in and out, stream sync, CUDA graph capture/instantiate/launch, re-allocation when the
batch changes, free), run through each CUDA binding installed (cuda-python, pycuda); only the engine's
enqueue is replaced, by a device-to-device copy of the first 16 features of each row into the
output, whose result is checked bit for bit."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mobile_vla_ros.core.backends import BackendUnavailable
from mobile_vla_ros.core.cuda_binding import BINDINGS, CUDA_PYTHON, PYCUDA, CudaIo, check_cuda, cuda_binding
from mobile_vla_ros.core.model_spec import INPUT_FEATURES, OUTPUT_ACTIONS, ModelSpec
from mobile_vla_ros.core.tensorrt_backend import io_shapes
from mobile_vla_ros.paths import default_model_dir

MODULE = {CUDA_PYTHON: "cuda", PYCUDA: "pycuda"}


def usable(name: str):
    """The binding, if its module is installed and it sees a GPU; else None."""
    if importlib.util.find_spec(MODULE[name]) is None:
        return None
    try:
        binding = BINDINGS[name]()
        return binding if binding.device_count() > 0 else None
    except (BackendUnavailable, RuntimeError):
        return None


USABLE = {name: usable(name) for name in BINDINGS}


def test_binding_choice_prefers_cuda_python_names_the_other_and_says_what_to_install():
    installed = [name for name in BINDINGS if importlib.util.find_spec(MODULE[name]) is not None]
    lines: list[str] = []
    if USABLE[CUDA_PYTHON] is None and USABLE[PYCUDA] is None and not installed:
        with pytest.raises(BackendUnavailable, match=r"pip install cuda-python, or pycuda"):
            cuda_binding(lines.append)
        assert lines == []
        return
    if USABLE[CUDA_PYTHON] is None and USABLE[PYCUDA] is None:
        pytest.skip(f"{installed} installed but no CUDA GPU")
    chosen = cuda_binding(lines.append)
    expected = CUDA_PYTHON if CUDA_PYTHON in installed else PYCUDA
    assert chosen.name == expected and len(lines) == 1 and lines[0].startswith(f"CUDA binding: {expected}")
    assert ("also installed: pycuda" in lines[0]) == (expected == CUDA_PYTHON and PYCUDA in installed)


class CopyFeaturesIntoOutput:
    """The stand-in for execute_async_v3: output[b].flat = features[b, :16], enqueued on the stream
    whose handle the plumbing passes (as TensorRT would get it)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec, self.io, self.handles = spec, None, []

    def __call__(self, stream_handle: int) -> None:
        spec, io = self.spec, self.io
        self.handles.append(stream_handle)
        width = spec.chunk_size * spec.action_dim * 4
        dst, src = io.device_ptr(OUTPUT_ACTIONS), io.device_ptr(INPUT_FEATURES)
        cuda = io._cuda
        if cuda.name == CUDA_PYTHON:
            check_cuda(cuda.cudart.cudaMemcpy2DAsync(dst, width, src, spec.feature_dim * 4, width, io.batch,
                                                     cuda.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                                     stream_handle))
        else:  # pycuda's copies take its Stream object: the one whose handle this is
            assert stream_handle == io.stream.handle
            for row in range(io.batch):
                cuda.cuda.memcpy_dtod_async(dst + row * width, src + row * spec.feature_dim * 4, width, io.stream)


@pytest.mark.parametrize("cuda_graph", [True, False])
@pytest.mark.parametrize("binding", list(BINDINGS))
def test_cuda_io_plumbing_runs_copies_graph_and_reallocation_bit_exact_on_gpu(binding, cuda_graph):
    if USABLE[binding] is None:
        pytest.skip(f"needs {binding} and a CUDA GPU (run on the device machine)")
    spec = ModelSpec.load(default_model_dir())
    names = list(io_shapes(spec, 1))
    bound = []
    execute = CopyFeaturesIntoOutput(spec)
    io = CudaIo(USABLE[binding], lambda batch: io_shapes(spec, batch), names[:-1], OUTPUT_ACTIONS, execute,
                lambda name, shape, ptr: bound.append((name, shape, ptr)), cuda_graph=cuda_graph)
    execute.io = io
    rng = np.random.default_rng(0)
    for call, batch in enumerate((1, 1, 3, 3, 1, 1)):  # repeats replay; a new batch re-allocates, re-captures
        feeds = {name: rng.standard_normal(shape).astype(np.float32)
                 for name, shape in io_shapes(spec, batch).items() if name != OUTPUT_ACTIONS}
        if call < 5:
            out = io.run(feeds)
        else:  # the node runs inference in a worker thread, not the one that made the buffers
            with ThreadPoolExecutor(1) as worker:
                out = worker.submit(io.run, feeds).result()
        assert out.shape == (batch, spec.chunk_size, spec.action_dim)
        expected = feeds[INPUT_FEATURES][:, : spec.chunk_size * spec.action_dim].reshape(out.shape)
        assert out.tobytes() == expected.tobytes()  # bit for bit: new host values reach a replayed graph
    assert io.graph_captures == (3 if cuda_graph else 0)  # batch 1, then 3, then 1 again
    # enqueued: warm-up at each of the 3 allocations, then one capture per allocation or one per call
    assert len(execute.handles) == 3 + (3 if cuda_graph else 6)
    assert set(execute.handles) == {USABLE[binding].handle(io.stream)}
    assert [name for name, _, _ in bound] == names * 3  # every tensor bound at each allocation
    assert all(ptr != 0 for _, _, ptr in bound) and bound[-1][1] == (1, spec.chunk_size, spec.action_dim)
    io.close()
    with pytest.raises(KeyError):  # closed: no buffer left
        io.device_ptr(OUTPUT_ACTIONS)
