"""Regenerate the committed Python code for proto/framecast/v1/framecast.proto.

    python proto/generate.py            # writes next to the .proto
    python proto/generate.py OUT_DIR    # writes OUT_DIR/framecast/v1/...

The committed files must equal what this writes; tests/test_proto.py checks it.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILE = "framecast/v1/framecast.proto"
GENERATED = ("framecast_pb2.py", "framecast_pb2.pyi", "framecast_pb2_grpc.py")


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_ROOT / PROTO_FILE),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_FILE}")
    return [out_dir / "framecast" / "v1" / name for name in GENERATED]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT):
        print(path)
