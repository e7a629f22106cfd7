"""Generates the gRPC stubs coord_client ships (from ../../proto) into
src/coord_client/_pb, with imports rewritten to live inside the package, so
users need neither protoc nor a top-level `coord` package of their own.
Run before building or testing: `python scripts/generate.py`."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PROTO = HERE.parents[1] / "proto"
OUT = HERE / "src" / "coord_client" / "_pb"


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "coord" / "v1").glob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={OUT}", f"--pyi_out={OUT}",
         f"--grpc_python_out={OUT}", *files],
        check=True, cwd=PROTO,
    )
    for path in OUT.rglob("*.py*"):
        text = path.read_text()
        text = re.sub(r"^from coord\.v1 import", "from coord_client._pb.coord.v1 import", text, flags=re.M)
        text = re.sub(r"^import coord\.v1\.", "import coord_client._pb.coord.v1.", text, flags=re.M)
        path.write_text(text)
    for directory in [OUT, *[d for d in OUT.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()


if __name__ == "__main__":
    main()
