"""The CUDA plumbing of the TensorRT backend, run on a GPU -- not TensorRT, which cannot be installed
here. `CudaIo` is the backend's own buffer/stream/graph code (pinned host buffers, device buffers,
async copies in and out, stream sync, CUDA graph capture/instantiate/launch, re-allocation when the
batch changes, free); only the engine's enqueue is replaced, by a device-to-device copy of the first
16 features of each row into the output, whose result is checked bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_ros.core.backends import BackendUnavailable
from mobile_vla_ros.core.model_spec import INPUT_FEATURES, OUTPUT_ACTIONS, ModelSpec
from mobile_vla_ros.core.tensorrt_backend import CudaIo, check_cuda, import_cudart, io_shapes
from mobile_vla_ros.paths import default_model_dir

try:
    CUDART = import_cudart()
    GPU = check_cuda(CUDART.cudaGetDeviceCount()) > 0
except (BackendUnavailable, RuntimeError):
    CUDART, GPU = None, False
pytestmark = pytest.mark.skipif(not GPU, reason="needs cuda-python and a CUDA GPU (run on the device machine)")


class CopyFeaturesIntoOutput:
    """The stand-in for execute_async_v3: output[b].flat = features[b, :16], on the stream."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec, self.io = spec, None

    def __call__(self, stream) -> None:
        spec, io = self.spec, self.io
        width = spec.chunk_size * spec.action_dim * 4
        check_cuda(CUDART.cudaMemcpy2DAsync(io.device_ptr(OUTPUT_ACTIONS), width, io.device_ptr(INPUT_FEATURES),
                                            spec.feature_dim * 4, width, io.batch,
                                            CUDART.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_cuda_io_plumbing_runs_copies_graph_and_reallocation_bit_exact_on_gpu(cuda_graph):
    spec = ModelSpec.load(default_model_dir())
    names = list(io_shapes(spec, 1))
    bound = []
    execute = CopyFeaturesIntoOutput(spec)
    io = CudaIo(CUDART, lambda batch: io_shapes(spec, batch), names[:-1], OUTPUT_ACTIONS, execute,
                lambda name, shape, ptr: bound.append((name, shape, ptr)), cuda_graph=cuda_graph)
    execute.io = io
    rng = np.random.default_rng(0)
    for batch in (1, 1, 3, 3, 1):  # repeated calls replay; a new batch re-allocates and re-captures
        feeds = {name: rng.standard_normal(shape).astype(np.float32)
                 for name, shape in io_shapes(spec, batch).items() if name != OUTPUT_ACTIONS}
        out = io.run(feeds)
        assert out.shape == (batch, spec.chunk_size, spec.action_dim)
        expected = feeds[INPUT_FEATURES][:, : spec.chunk_size * spec.action_dim].reshape(out.shape)
        assert out.tobytes() == expected.tobytes()  # bit for bit: new host values reach a replayed graph
    assert io.graph_captures == (3 if cuda_graph else 0)  # batch 1, then 3, then 1 again
    assert [name for name, _, _ in bound] == names * 3  # every tensor bound at each allocation
    assert all(ptr != 0 for _, _, ptr in bound) and bound[-1][1] == (1, spec.chunk_size, spec.action_dim)
    io.close()
