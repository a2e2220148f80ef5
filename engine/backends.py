"""Inference backends behind one interface: ``infer(batch [B,3,H,W] torch) -> dict[str, torch.Tensor]``.

* ``TorchBackend``: the PyTorch module (CPU; CUDA with fp16 and CUDA graphs captured per batch-size bucket;
  ``torch.compile`` optional).
* ``OnnxRuntimeBackend``: an ONNX file (CPU provider; CUDA provider when onnxruntime-gpu is installed).
* ``TensorRTBackend``: a TensorRT 10 plan (tensors by name, shapes set per batch, I/O as torch CUDA tensors,
  ``execute_async_v3`` on the current torch stream); ``tensorrt`` is imported only when one is built.

Output names are the network's inference outputs (hourglass ``heatmaps``; SPM ``root``, ``disp``, ``depth``).
Backends return raw network outputs: decoding lives in ``engine.postprocess``, never here. Returned tensors
may be views of buffers reused by the next call (CUDA graphs, TensorRT): consume them before calling again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Batch sizes with their own CUDA graph: powers of two below ``max_batch``, and ``max_batch``."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return tuple(sizes + [max_batch])


class TorchBackend:
    """A PyTorch module with ``.infer(x) -> dict`` on ``device``.

    Args:
        model: the network (``models.build_model`` / ``load_checkpoint``); put in eval mode here.
        device: "cpu" or a CUDA device.
        fp16: run in half precision (default: on CUDA).
        cuda_graphs: capture one CUDA graph per batch bucket (default: on CUDA).
        compile: wrap ``model.infer`` in ``torch.compile``.
        max_batch: the largest batch ``infer`` accepts with CUDA graphs.
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", *, fp16: bool | None = None,
                 cuda_graphs: bool | None = None, compile: bool = False, max_batch: int = 8) -> None:
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"TorchBackend: device {self.device} asked for but CUDA is not available")
        self.fp16 = cuda if fp16 is None else fp16
        self.input_dtype = torch.float16 if self.fp16 else torch.float32
        self.model = model.eval().to(self.device, self.input_dtype)
        self._fn = torch.compile(self.model.infer) if compile else self.model.infer
        self.cuda_graphs = cuda if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not cuda:
            raise ValueError("TorchBackend: cuda_graphs needs a CUDA device")
        self.max_batch = max_batch
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, dict[str, torch.Tensor]]] = {}

    def _capture(self, bucket: int, shape: tuple[int, ...]):
        static_in = torch.zeros((bucket, *shape), dtype=self.input_dtype, device=self.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm-up on a side stream, as CUDA graph capture requires
                self._fn(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = self._fn(static_in)
        return graph, static_in, static_out

    @torch.inference_mode()
    def infer(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs ``{name: [B, C, h, w]}`` of batch [B,3,H,W]."""
        batch = batch.to(self.device, self.input_dtype)
        if not self.cuda_graphs:
            return self._fn(batch)
        b = batch.shape[0]
        bucket = next((s for s in batch_buckets(self.max_batch) if s >= b), None)
        if bucket is None:
            raise ValueError(f"TorchBackend.infer: batch {b} exceeds max_batch {self.max_batch}")
        key = (bucket, tuple(batch.shape[1:]))
        if key not in self._graphs:
            self._graphs[key] = self._capture(bucket, tuple(batch.shape[1:]))
        graph, static_in, static_out = self._graphs[key]
        static_in[:b].copy_(batch)
        graph.replay()
        return {k: v[:b] for k, v in static_out.items()}


class OnnxRuntimeBackend:
    """An ONNX file run by ONNX Runtime; the CUDA provider when ``device`` is CUDA and it is installed.

    Args:
        path: the .onnx file.
        device: "cpu" or a CUDA device.
        threads: ONNX Runtime's intra-op threads (0: its default, one per physical core).
        spinning: let idle pool threads spin for work (ONNX Runtime's default). Off here: on a few shared
            cores a spinning thread takes the core from the pre/post-processing and capture threads.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", *, threads: int = 0,
                 spinning: bool = False) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"OnnxRuntimeBackend: ONNX file {self.path} not found")
        self.device = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("OnnxRuntimeBackend: CUDA asked for but onnxruntime has no CUDAExecutionProvider "
                                 "(install onnxruntime-gpu)")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device.index or 0}))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtype = torch.float16 if "float16" in self.session.get_inputs()[0].type else torch.float32

    def infer(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs ``{name: [B, C, h, w]}`` (on ``device``) of batch [B,3,H,W]."""
        host = np.ascontiguousarray(batch.detach().to("cpu", self.input_dtype).numpy())
        outs = self.session.run(self.output_names, {self.input_name: host})
        return {n: torch.from_numpy(o).to(self.device) for n, o in zip(self.output_names, outs)}


def _trt_dtypes(trt) -> dict:
    return {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
            trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool, trt.DataType.INT8: torch.int8}


def check_trt_manifest(manifest: dict, source: str, trt_version: str, gpu: str) -> None:
    """A clear error when the plan was built for another TensorRT version or GPU than this one.

    The keys are read at the manifest's top level or in its ``export`` section.
    """
    for key, have in (("trt_version", trt_version), ("gpu", gpu)):
        want = manifest.get(key, (manifest.get("export") or {}).get(key))
        if want is None:
            raise ValueError(f"{source}: manifest lacks field {key!r} (needed to check the TensorRT plan)")
        if str(want) != str(have):
            raise ValueError(f"{source}: TensorRT plan built for {key}={want!r} but this machine has {have!r}; "
                             "rebuild the engine here (tools/export_onnx then trtexec)")


class TensorRTBackend:
    """A serialized TensorRT 10 engine (plan) with its manifest; I/O are torch CUDA tensors."""

    name = "tensorrt"

    def __init__(self, path: str | Path, manifest: dict, device: str | torch.device = "cuda") -> None:
        import tensorrt as trt

        self.path, self.device = Path(path), torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError("TensorRTBackend needs a CUDA device")
        check_trt_manifest(manifest, str(self.path), trt.__version__, torch.cuda.get_device_name(self.device))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ValueError(f"{self.path}: TensorRT could not deserialize this plan")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input tensor, found {inputs}")
        self.input_name, self.output_names = inputs[0], [n for n in names if n not in inputs]
        dtypes = _trt_dtypes(trt)
        self._dtype = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in names}
        self.input_dtype = self._dtype[self.input_name]

    def infer(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs ``{name: [B, ...]}`` (CUDA tensors) of batch [B,3,H,W]."""
        batch = batch.to(self.device, self.input_dtype).contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(batch.shape)):
            raise ValueError(f"{self.path}: input shape {tuple(batch.shape)} outside the plan's optimisation profile")
        self.context.set_tensor_address(self.input_name, batch.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtype[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        return outputs
