"""OpenTelemetry traces from a real server after real jobs: RPC, job and phase spans, their parents,
request ids and error statuses; tracing off imports nothing; the serve options."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from framecast.engine.errors import InvalidInput
from framecast.server.job import Job
from framecast.server.jobs import JobQueue
from framecast.server.request_ids import request_scope
from framecast.v1 import framecast_pb2 as pb
from framecast.v1 import framecast_pb2_grpc

from .test_e2e import upload_scene

TRAIN, PROPAGATE = "framecast.v1.Framecast/Train", "framecast.v1.Framecast/Propagate"
CALLER_TRACE, CALLER_SPAN = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"  # a caller's span, as W3C trace context writes it


@pytest.fixture(scope="module")
def exporter():
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory, exporter):
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path_factory.mktemp("tracing-data")),
                                host="127.0.0.1", port=0, max_frames=33, max_pixels=128 * 128,
                                otel_service_name="framecast-test", otel_exporter=exporter)  # fmt: skip
    running = start_server(config)
    assert running.wait_ready(timeout=120), running.load_error
    yield running
    running.stop(grace=5)


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield framecast_pb2_grpc.FramecastStub(channel)


def spans_of(exporter, request_id: str, count: int, timeout: float = 10.0):
    """The finished spans carrying ``request_id``, once there are ``count`` of them (a stream's
    span ends just after its last message reached the client)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = [s for s in exporter.get_finished_spans() if s.attributes.get("framecast.request_id") == request_id]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


def one(spans, name: str):
    named = [s for s in spans if s.name == name]
    assert len(named) == 1, (name, [s.name for s in spans])
    return named[0]


def children(exporter, parent):
    return [s for s in exporter.get_finished_spans() if s.parent is not None and s.parent.span_id == parent.context.span_id]


def check_job(exporter, rpc_span, job_id: str, kind: str, adapter: str, request_id: str, phases: tuple[str, ...]):
    """The job's span is the RPC span's child, and its phases' spans its children, in order, inside it."""
    (job,) = children(exporter, rpc_span)
    assert job.name == f"{kind} job" and job.context.trace_id == CALLER_TRACE
    assert dict(job.attributes) == {"framecast.job_id": job_id, "framecast.job.kind": kind, "framecast.adapter": adapter,
                                    "framecast.request_id": request_id, "framecast.job.state": "succeeded",
                                    "framecast.job.queue_wait_s": job.attributes["framecast.job.queue_wait_s"]}  # fmt: skip
    assert job.status.status_code == StatusCode.UNSET
    assert rpc_span.start_time <= job.start_time <= job.end_time <= rpc_span.end_time
    steps = sorted(children(exporter, job), key=lambda s: s.start_time)
    assert [s.name for s in steps] == list(phases)
    for before, after in zip(steps, steps[1:]):
        assert before.end_time <= after.start_time  # a phase begins where the one before it ended
    for step in steps:
        assert step.attributes["framecast.phase"] == step.name and step.attributes["framecast.steps"] >= 1
        assert job.start_time <= step.start_time <= step.end_time <= job.end_time
        assert step.context.trace_id == CALLER_TRACE


def test_spans_of_a_train_a_propagate_and_a_refusal(server, stub, exporter, scene):
    source, mask, edited = upload_scene(stub, scene)
    metadata = [("traceparent", TRACEPARENT), ("x-request-id", "trace-train")]
    request = pb.TrainRequest(adapter="traced", source_id=source.id, mask_id=mask.id, prompt="p", steps=2, rank=2, seed=1)
    trained = list(stub.Train(request, timeout=300, metadata=metadata))
    assert trained[-1].WhichOneof("event") == "adapter"
    propagate = pb.PropagateRequest(adapter="traced", source_id=source.id, mask_id=mask.id, prompt="p", steps=2,
                                    edited_first_frame_id=edited.id)  # fmt: skip
    metadata = [("traceparent", TRACEPARENT), ("x-request-id", "trace-propagate")]
    propagated = list(stub.Propagate(propagate, timeout=300, metadata=metadata))
    assert propagated[-1].WhichOneof("event") == "result"
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Train(pb.TrainRequest(adapter="bad name!", source_id=source.id, mask_id=mask.id, prompt="p"),
                        timeout=30, metadata=[("x-request-id", "trace-refused")]))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    calls = (("trace-train", TRAIN, trained, ("decode", "motion")),
             ("trace-propagate", PROPAGATE, propagated, ("decode", "denoise", "encode", "measure")))
    for request_id, method, events, phases in calls:
        spans = spans_of(exporter, request_id, count=2)  # the RPC's and its job's
        rpc = one(spans, method)
        assert rpc.kind == SpanKind.SERVER and rpc.status.status_code == StatusCode.UNSET
        assert dict(rpc.attributes) == {"rpc.system": "grpc", "rpc.service": "framecast.v1.Framecast",
                                        "rpc.method": method.rpartition("/")[2], "framecast.request_id": request_id,
                                        "rpc.grpc.status_code": 0}  # fmt: skip
        # The caller's traceparent is its parent.
        assert (rpc.context.trace_id, rpc.parent.span_id, rpc.parent.is_remote) == (CALLER_TRACE, CALLER_SPAN, True)
        assert rpc.resource.attributes["service.name"] == "framecast-test"
        kind = method.rpartition("/")[2].lower()
        check_job(exporter, rpc, events[0].job_id, kind, "traced", request_id, phases)

    (span,) = spans_of(exporter, "trace-refused", count=1)
    assert span.name == TRAIN and span.parent is None  # no traceparent: a trace of its own
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description.startswith("INVALID_ARGUMENT: ") and "adapter" in span.status.description
    assert not children(exporter, span)  # refused: no job
    # Every other call has its span too (the uploads), health's none; no provider went global.
    uploads = [s for s in exporter.get_finished_spans() if s.name == "framecast.v1.Framecast/UploadMedia"]
    assert len(uploads) >= 3 and all(s.attributes["rpc.grpc.status_code"] == 0 for s in uploads)
    assert not any(s.name.startswith("grpc.health") for s in exporter.get_finished_spans())
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_a_failed_job_and_one_cancelled_while_waiting(tmp_path):
    from framecast.server.tracing import Tracing

    exporter = InMemorySpanExporter()
    tracing = Tracing("framecast-test", exporter=exporter)

    def fail(job):
        job.emit(progress=pb.Progress(phase="decode", step=1, total=3))
        job.emit(progress=pb.Progress(phase="motion", step=2, total=3))
        raise InvalidInput("mask", "m", "is wrong")

    def wait_for_cancel(job):
        job.emit(progress=pb.Progress(phase="motion", step=1, total=1))
        while not job.should_cancel():
            time.sleep(0.01)

    queue = JobQueue(tmp_path / "jobs", max_queue=4, observer=tracing)
    with request_scope("req-failed"):
        failed = queue.submit(Job(pb.JOB_KIND_TRAIN, "a", fail))
    list(failed.follow())
    running = queue.submit(Job(pb.JOB_KIND_TRAIN, "b", wait_for_cancel, request_id="req-running"))
    waiting = queue.submit(Job(pb.JOB_KIND_PROPAGATE, "b", lambda job: None, request_id="req-waiting"))
    while running.info.progress.phase != "motion":  # running, not waiting, when it is cancelled
        time.sleep(0.01)
    queue.cancel(waiting.id)
    queue.cancel(running.id)
    list(running.follow())
    queue.shutdown(1.0)
    tracing.close()

    spans = {s.attributes.get("framecast.request_id"): s for s in exporter.get_finished_spans() if s.name.endswith(" job")}
    job = spans["req-failed"]
    assert job.status.status_code == StatusCode.ERROR
    assert job.status.description == "INVALID_ARGUMENT: mask is wrong (got 'm')"
    assert job.attributes["framecast.job.state"] == "failed"
    assert job.attributes["framecast.job.error_code"] == "INVALID_ARGUMENT"
    assert sorted(s.name for s in children(exporter, job)) == ["decode", "motion"]
    assert job.parent is None  # made outside any RPC's span
    for request_id, state in (("req-running", "cancelled"), ("req-waiting", "cancelled")):
        assert spans[request_id].attributes["framecast.job.state"] == state
        assert spans[request_id].status.status_code == StatusCode.UNSET
    assert [s.name for s in children(exporter, spans["req-running"])] == ["motion"]
    assert not children(exporter, spans["req-waiting"])  # it never ran: its span is its wait


class Collector:
    """An OTLP/gRPC trace collector on a real port, keeping what it is sent."""

    def __init__(self):
        from concurrent import futures

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        received = self.received = []

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                received.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def spans(self) -> list[tuple[str, object]]:
        """(service.name, span) for every span received."""
        found = []
        for request in self.received:
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
                found += [(service, span) for scope in resource_spans.scope_spans for span in scope.spans]
        return found


def test_spans_reach_an_otlp_collector(tiny_model_dir, tmp_path):
    """--otel-endpoint's exporter sends the spans over OTLP/gRPC; a stop sends those still batched."""
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    collector = Collector()
    try:
        config = ServerConfig.build(model_dir=str(tiny_model_dir), data_dir=str(tmp_path / "data"), port=0,
                                    otel_endpoint=f"http://127.0.0.1:{collector.port}", otel_service_name="edits")  # fmt: skip
        running = start_server(config)
        try:
            assert running.wait_ready(timeout=120), running.load_error
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                metadata = [("traceparent", TRACEPARENT), ("x-request-id", "otlp-1")]
                framecast_pb2_grpc.FramecastStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=30,
                                                                        metadata=metadata)  # fmt: skip
        finally:
            running.stop(grace=1)
        (service, span), = [(service, span) for service, span in collector.spans()
                            if span.name == "framecast.v1.Framecast/GetServerInfo"]  # fmt: skip
        assert service == "edits"
        assert (span.trace_id, span.parent_span_id) == (CALLER_TRACE.to_bytes(16, "big"), CALLER_SPAN.to_bytes(8, "big"))
        attributes = {a.key: a.value for a in span.attributes}
        assert attributes["framecast.request_id"].string_value == "otlp-1"
        assert attributes["rpc.grpc.status_code"].int_value == 0
    finally:
        collector.server.stop(None)


def test_tracing_off_installs_and_imports_nothing(tiny_model_dir, tmp_path):
    """Without --otel-endpoint a server runs, and answers, with OpenTelemetry never imported."""
    script = textwrap.dedent(f"""
        import sys
        import grpc
        from framecast.server.app import start_server
        from framecast.server.config import ServerConfig
        from framecast.v1 import framecast_pb2 as pb, framecast_pb2_grpc

        config = ServerConfig.build(model_dir={str(tiny_model_dir)!r}, data_dir={str(tmp_path / "data")!r}, port=0)
        server = start_server(config)
        assert server.wait_ready(120) and server.tracing is None
        with grpc.insecure_channel(f"127.0.0.1:{{server.port}}") as channel:
            framecast_pb2_grpc.FramecastStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        server.stop(grace=1)
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "framecast.server.tracing"))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_otel_options_and_their_refusals(tiny_model_dir, tmp_path, monkeypatch):
    import argparse

    from framecast.server.cli import add_options, server_config

    parser = argparse.ArgumentParser()
    add_options(parser)
    base = ["--model", str(tiny_model_dir), "--data", str(tmp_path / "data")]
    config = server_config(parser.parse_args(base))
    assert (config.otel_endpoint, config.otel_service_name, config.otel_exporter) == ("", "framecast", None)  # off
    config = server_config(parser.parse_args(base + ["--otel-endpoint", "https://collector:4317", "--otel-service-name",
                                                     "edits"]))  # fmt: skip
    assert (config.otel_endpoint, config.otel_service_name) == ("https://collector:4317", "edits")
    for bad in ("collector:4317", "grpc://collector:4317", "http://", "http://collector:port"):
        with pytest.raises(InvalidInput, match="otel_endpoint must be the http:// .* URL of an OTLP/gRPC collector"):
            server_config(parser.parse_args(base + ["--otel-endpoint", bad]))
    with pytest.raises(InvalidInput, match="otel_service_name must not be empty"):
        server_config(parser.parse_args(base + ["--otel-service-name", " "]))
    # env: the exporter reads the standard variables, one of which must be set.
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with pytest.raises(InvalidInput, match="otel_endpoint reads OTEL_EXPORTER_OTLP_ENDPOINT .* neither is set"):
        server_config(parser.parse_args(base + ["--otel-endpoint", "env"]))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert server_config(parser.parse_args(base + ["--otel-endpoint", "env"])).otel_endpoint == "env"


def test_serve_names_the_tracing_extra_when_it_is_missing(tiny_model_dir, tmp_path):
    """``python -m framecast.server --otel-endpoint`` where OpenTelemetry's exporter cannot be imported."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["opentelemetry.exporter.otlp.proto.grpc.trace_exporter"] = None  # as if not installed
        from framecast.server.cli import main
        sys.exit(main(["--model", {str(tiny_model_dir)!r}, "--data", {str(tmp_path / "data")!r}, "--port", "0",
                       "--otel-endpoint", "http://localhost:4317"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --otel-endpoint: needs the tracing extra (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-grpc; "
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter is not installed): pip install 'framecast[tracing]' "
        "(got 'http://localhost:4317')"
    )
