"""The CUDA calls of the TensorRT runtime, through cuda-python or pycuda, and the buffer/graph code on top.

Jetson images carry one or the other: cuda-python (NVIDIA's bindings, preferred when both are
installed) or pycuda. Each binding offers the same small set of calls (`CudaBinding`); `CudaIo`,
the backend's pinned/device buffers, copies and CUDA graph, is written once over it. Both modules
are imported only when a binding is created, so machines without CUDA can import this package.
"""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from .backends import BackendUnavailable

CUDA_PYTHON, PYCUDA = "cuda-python", "pycuda"


class CudaBinding(Protocol):
    """What the runtime needs from CUDA. Streams and graphs are the binding's own objects;
    `handle(stream)` is the integer TensorRT's `execute_async_v3` takes."""

    name: str

    def handle(self, stream: Any) -> int: ...
    def stream_create(self) -> Any: ...
    def synchronize(self, stream: Any) -> None: ...
    def pinned_empty(self, shape: tuple[int, ...]) -> np.ndarray: ...
    def free_pinned(self, host: np.ndarray) -> None: ...
    def device_alloc(self, nbytes: int) -> int: ...
    def free_device(self, device_ptr: int) -> None: ...
    def copy_to_device(self, device_ptr: int, host: np.ndarray) -> None: ...
    def copy_to_device_async(self, device_ptr: int, host: np.ndarray, stream: Any) -> None: ...
    def copy_to_host_async(self, host: np.ndarray, device_ptr: int, stream: Any) -> None: ...
    def begin_capture(self, stream: Any) -> None: ...
    def end_capture(self, stream: Any) -> Any: ...
    def launch_graph(self, graph_exec: Any, stream: Any) -> None: ...
    def destroy_graph(self, graph_exec: Any) -> None: ...
    def device_count(self) -> int: ...
    def gpu_identity(self) -> tuple[str, str]: ...


def import_cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+) or `cuda.cudart` (older)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendUnavailable("cuda-python is not installed (pip install cuda-python)")


def check_cuda(result: Any) -> Any:
    """cuda-python calls return (error, *values); raise on error, return the value(s) if any."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


class CudaPythonBinding:
    """cuda-python's runtime API (the primary context, current on every thread)."""

    name = CUDA_PYTHON

    def __init__(self) -> None:
        self.cudart = import_cudart()

    def handle(self, stream: Any) -> int:
        return int(stream)

    def stream_create(self) -> Any:
        return check_cuda(self.cudart.cudaStreamCreate())

    def synchronize(self, stream: Any) -> None:
        check_cuda(self.cudart.cudaStreamSynchronize(stream))

    def pinned_empty(self, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        host_ptr = int(check_cuda(self.cudart.cudaMallocHost(count * 4)))
        return np.ctypeslib.as_array((ctypes.c_float * count).from_address(host_ptr)).reshape(shape)

    def free_pinned(self, host: np.ndarray) -> None:
        check_cuda(self.cudart.cudaFreeHost(host.ctypes.data))

    def device_alloc(self, nbytes: int) -> int:
        return int(check_cuda(self.cudart.cudaMalloc(nbytes)))

    def free_device(self, device_ptr: int) -> None:
        check_cuda(self.cudart.cudaFree(device_ptr))

    def copy_to_device(self, device_ptr: int, host: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check_cuda(self.cudart.cudaMemcpy(device_ptr, host.ctypes.data, host.nbytes, kind))

    def copy_to_device_async(self, device_ptr: int, host: np.ndarray, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check_cuda(self.cudart.cudaMemcpyAsync(device_ptr, host.ctypes.data, host.nbytes, kind, stream))

    def copy_to_host_async(self, host: np.ndarray, device_ptr: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(self.cudart.cudaMemcpyAsync(host.ctypes.data, device_ptr, host.nbytes, kind, stream))

    def begin_capture(self, stream: Any) -> None:
        check_cuda(self.cudart.cudaStreamBeginCapture(
            stream, self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))

    def end_capture(self, stream: Any) -> Any:
        graph = check_cuda(self.cudart.cudaStreamEndCapture(stream))
        graph_exec = check_cuda(self.cudart.cudaGraphInstantiate(graph, 0))
        check_cuda(self.cudart.cudaGraphDestroy(graph))  # the executable graph keeps what it needs
        return graph_exec

    def launch_graph(self, graph_exec: Any, stream: Any) -> None:
        check_cuda(self.cudart.cudaGraphLaunch(graph_exec, stream))

    def destroy_graph(self, graph_exec: Any) -> None:
        check_cuda(self.cudart.cudaGraphExecDestroy(graph_exec))

    def device_count(self) -> int:
        return int(check_cuda(self.cudart.cudaGetDeviceCount()))

    def gpu_identity(self) -> tuple[str, str]:
        props = check_cuda(self.cudart.cudaGetDeviceProperties(0))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.strip("\x00 "), f"{props.major}.{props.minor}"


class PyCudaBinding:
    """pycuda's driver API on the device's primary context (the one TensorRT's runtime API uses),
    pushed for each call and popped after it: the node calls in from worker threads, and pycuda aborts
    the process when a thread ends with a context still pushed. pycuda wraps no CUDA graph calls:
    those go to the driver library directly (cuStreamBeginCapture_v2 ... cuGraphLaunch, CUDA >= 11.4)."""

    name = PYCUDA
    _CAPTURE_MODE_GLOBAL = 0

    def __init__(self) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendUnavailable(f"pycuda is not installed ({exc})") from exc
        try:
            cuda.init()
            self._context = cuda.Device(0).retain_primary_context()
        except cuda.Error as exc:
            raise BackendUnavailable(f"pycuda finds no usable CUDA device: {exc}") from exc
        self.cuda: Any = cuda
        self._allocations: dict[int, Any] = {}  # device pointer -> pycuda allocation (freed when dropped)
        self._driver = ctypes.CDLL("libcuda.so.1")

    @contextmanager
    def _pushed(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def _driver_call(self, call: str, *args: Any) -> None:
        with self._pushed():
            code = getattr(self._driver, call)(*args)
        if code != 0:
            raise RuntimeError(f"CUDA driver error {code} in {call}")

    def handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_create(self) -> Any:
        with self._pushed():
            return self.cuda.Stream()

    def synchronize(self, stream: Any) -> None:
        with self._pushed():
            stream.synchronize()

    def pinned_empty(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._pushed():
            return self.cuda.pagelocked_empty(shape, np.float32)

    def free_pinned(self, host: np.ndarray) -> None:
        allocation: Any = host.base  # pagelocked_empty's array is a view of its HostAllocation
        with self._pushed():
            allocation.free()

    def device_alloc(self, nbytes: int) -> int:
        with self._pushed():
            allocation = self.cuda.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free_device(self, device_ptr: int) -> None:
        with self._pushed():
            self._allocations.pop(device_ptr).free()

    def copy_to_device(self, device_ptr: int, host: np.ndarray) -> None:
        with self._pushed():
            self.cuda.memcpy_htod(device_ptr, host)

    def copy_to_device_async(self, device_ptr: int, host: np.ndarray, stream: Any) -> None:
        with self._pushed():
            self.cuda.memcpy_htod_async(device_ptr, host, stream)

    def copy_to_host_async(self, host: np.ndarray, device_ptr: int, stream: Any) -> None:
        with self._pushed():
            self.cuda.memcpy_dtoh_async(host, device_ptr, stream)

    def begin_capture(self, stream: Any) -> None:
        self._driver_call("cuStreamBeginCapture_v2", ctypes.c_void_p(self.handle(stream)), self._CAPTURE_MODE_GLOBAL)

    def end_capture(self, stream: Any) -> Any:
        graph, graph_exec = ctypes.c_void_p(), ctypes.c_void_p()
        self._driver_call("cuStreamEndCapture", ctypes.c_void_p(self.handle(stream)), ctypes.byref(graph))
        self._driver_call("cuGraphInstantiateWithFlags", ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0))
        self._driver_call("cuGraphDestroy", graph)
        return graph_exec

    def launch_graph(self, graph_exec: Any, stream: Any) -> None:
        self._driver_call("cuGraphLaunch", graph_exec, ctypes.c_void_p(self.handle(stream)))

    def destroy_graph(self, graph_exec: Any) -> None:
        self._driver_call("cuGraphExecDestroy", graph_exec)

    def device_count(self) -> int:
        return int(self.cuda.Device.count())

    def gpu_identity(self) -> tuple[str, str]:
        device = self.cuda.Device(0)
        major, minor = device.compute_capability()
        return str(device.name()), f"{major}.{minor}"


BINDINGS: dict[str, Callable[[], CudaBinding]] = {CUDA_PYTHON: CudaPythonBinding, PYCUDA: PyCudaBinding}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cuda_binding(log: Callable[[str], None] | None = None, prefer: str | None = None) -> CudaBinding:
    """cuda-python if it is installed, else pycuda (or `prefer`, when given); logs the choice."""
    installed = {CUDA_PYTHON: _version("cuda-python") or _version("cuda-bindings"), PYCUDA: _version("pycuda")}
    order = [prefer] if prefer else [CUDA_PYTHON, PYCUDA]
    problems = []
    for name in order:
        try:
            binding = BINDINGS[name]()
        except BackendUnavailable as exc:
            problems.append(str(exc))
            continue
        others = [f"{n} {v}" for n, v in installed.items() if n != name and v]
        if log is not None:
            log(f"CUDA binding: {name} {installed[name] or ''}".rstrip()
                + (f" (also installed: {', '.join(others)})" if others else ""))
        return binding
    raise BackendUnavailable("no CUDA binding for the TensorRT runtime: " + "; ".join(problems)
                             + " (pip install cuda-python, or pycuda)")


class CudaIo:
    """The CUDA half of the runtime, independent of TensorRT: pinned host and device buffers per tensor
    (re-made when the batch changes), copies in, `execute(stream_handle)`, copy out on one stream, and the
    whole enqueue captured once as a CUDA graph and replayed. TensorRTBackend passes the engine's
    enqueue as `execute` and binds each buffer to its tensor in `bind(name, shape, device_ptr)`."""

    def __init__(self, cuda: CudaBinding, shapes: Callable[[int], dict[str, tuple[int, ...]]], inputs: list[str],
                 output: str, execute: Callable[[int], None],
                 bind: Callable[[str, tuple[int, ...], int], None] | None = None, cuda_graph: bool = True) -> None:
        self._cuda, self._shapes, self._inputs, self._output = cuda, shapes, inputs, output
        self._execute, self._bind, self._use_graph = execute, bind, cuda_graph
        self.stream = cuda.stream_create()
        self.batch = 0
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        self._graph_exec: Any = None
        self.graph_captures = 0

    def device_ptr(self, name: str) -> int:
        return self._device[name]

    def _allocate(self, batch: int) -> None:
        """Pinned host + device buffers for `batch`, bound by tensor name; re-done when the batch changes."""
        self._free()
        for name, shape in self._shapes(batch).items():
            self._host[name] = self._cuda.pinned_empty(tuple(shape))
            self._device[name] = self._cuda.device_alloc(self._host[name].nbytes)
            if self._bind is not None:
                self._bind(name, tuple(shape), self._device[name])
        self.batch = batch

    def _enqueue(self) -> None:
        for name in self._inputs:
            self._cuda.copy_to_device_async(self._device[name], self._host[name], self.stream)
        self._execute(self._cuda.handle(self.stream))
        self._cuda.copy_to_host_async(self._host[self._output], self._device[self._output], self.stream)

    def _capture_graph(self) -> None:
        """Record copy-in, execute and copy-out once; later calls replay the graph (less CPU launch time)."""
        self._cuda.begin_capture(self.stream)
        self._enqueue()
        self._graph_exec = self._cuda.end_capture(self.stream)
        self.graph_captures += 1

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        batch = next(iter(feeds.values())).shape[0]
        if batch != self.batch:
            self._allocate(batch)
            self._enqueue()  # the first run also warms up before a graph is captured
            self._cuda.synchronize(self.stream)
        for name, value in feeds.items():
            self._host[name][...] = value
        if self._use_graph and self._graph_exec is None:
            self._capture_graph()
        if self._graph_exec is not None:
            self._cuda.launch_graph(self._graph_exec, self.stream)
        else:
            self._enqueue()
        self._cuda.synchronize(self.stream)
        return self._host[self._output].copy()

    def _free(self) -> None:
        """The graph holds the old buffers' addresses: it goes with them."""
        if self._graph_exec is not None:
            self._cuda.destroy_graph(self._graph_exec)
            self._graph_exec = None
        for name, device_ptr in self._device.items():
            self._cuda.free_device(device_ptr)
            self._cuda.free_pinned(self._host[name])
        self._device, self._host = {}, {}

    def close(self) -> None:
        self._free()
