"""The committed stubs are exactly what the proto generates (`make proto`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "src" / "claimcore" / "v1"


def test_regenerating_the_stubs_changes_nothing(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)], check=True)
    fresh = tmp_path / "claimcore" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == ["claims_pb2.py", "claims_pb2.pyi", "claims_pb2_grpc.py"]
    for name in names:
        assert (fresh / name).read_text() == (STUBS / name).read_text(), f"{name} is stale: run make proto"
