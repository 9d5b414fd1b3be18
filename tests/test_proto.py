"""The committed generated code is what the .proto produces now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_up_to_date(tmp_path):
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = generate.generate(tmp_path)
    for path in fresh:
        committed = ROOT / "proto" / "framecast" / "v1" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is out of date with framecast.proto: run `python proto/generate.py` and commit"
        )


def test_service_has_the_contracted_rpcs():
    from framecast.v1 import framecast_pb2

    service = framecast_pb2.DESCRIPTOR.services_by_name["Framecast"]
    assert service.full_name == "framecast.v1.Framecast"
    assert {m.name for m in service.methods} == {
        "UploadMedia", "DownloadMedia", "ListMedia", "DeleteMedia",
        "Train", "Propagate", "WatchJob", "GetJob", "ListJobs", "CancelJob",
        "ListAdapters", "GetAdapter", "LoadAdapter", "UnloadAdapter", "PinAdapter", "DeleteAdapter",
        "ImportAdapter", "ExportAdapter", "GetServerInfo", "Plan", "Track",
    }
