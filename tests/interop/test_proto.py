"""The proto contract checks in `make test` catch what they exist for."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness import ROOT

BUF = shutil.which("buf") or str(Path(sys.executable).parent / "buf")


def copy_of_protos(tmp_path):
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    return tmp_path / "proto" / "coord" / "v1" / "lock.proto"


def breaking(tmp_path):
    return subprocess.run([BUF, "breaking", str(tmp_path), "--against", str(ROOT)], capture_output=True, text=True)


def test_buf_breaking_accepts_the_protos_unchanged(tmp_path):
    copy_of_protos(tmp_path)
    out = breaking(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_buf_breaking_rejects_a_renamed_field(tmp_path):
    lock = copy_of_protos(tmp_path)
    lock.write_text(lock.read_text().replace("int64 wait_ms = 4;", "int64 wait_millis = 4;"))
    out = breaking(tmp_path)
    assert out.returncode != 0
    assert 'changed name from "wait_ms" to "wait_millis"' in out.stdout


def test_buf_breaking_rejects_a_renumbered_field(tmp_path):
    lock = copy_of_protos(tmp_path)
    lock.write_text(re.sub(r"string owner = 2;", "string owner = 9;", lock.read_text(), count=1))
    out = breaking(tmp_path)
    assert out.returncode != 0, out.stdout
    assert "GrantRequest" in out.stdout


def test_buf_lint_rejects_an_unprefixed_enum_value(tmp_path):
    lock = copy_of_protos(tmp_path)
    lock.write_text(lock.read_text().replace("RELEASE_STATUS_NOT_HELD = 2;", "NOT_HELD = 2;"))
    out = subprocess.run([BUF, "lint", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "NOT_HELD" in out.stdout
