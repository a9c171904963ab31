"""docs/api.md is exactly what scripts/gen_api_docs.py makes of the proto, and covers all of it."""

import re
import subprocess
import sys
from pathlib import Path

from claimcore.v1 import claims_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "api.md"
REGENERATE = ".venv/bin/python scripts/gen_api_docs.py"


def test_regenerating_the_api_reference_changes_nothing(tmp_path):
    fresh = tmp_path / "api.md"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_api_docs.py"), str(fresh)], check=True)
    assert fresh.read_text(encoding="utf-8") == API_MD.read_text(encoding="utf-8"), (
        f"docs/api.md is stale (the proto changed since it was generated): run {REGENERATE}"
    )


def test_every_rpc_message_field_and_enum_value_of_the_proto_is_in_the_reference():
    """Checked against the compiled stubs' descriptor, not the generator's own reading of the proto."""
    text = API_MD.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} (.+)$", text, re.MULTILINE))
    sections = re.split(r"^#{3,4} ", text, flags=re.MULTILINE)

    def section(heading: str) -> str:
        return next(s for s in sections if s.startswith(heading + "\n"))

    missing = []
    for service in pb.DESCRIPTOR.services_by_name.values():
        if f"service {service.name}" not in headings:
            missing.append(f"service {service.name}")
        for method in service.methods:
            if f"rpc {method.name}" not in headings:
                missing.append(f"rpc {service.name}.{method.name}")
                continue
            body = section(f"rpc {method.name}")
            for type_name in (method.input_type.name, method.output_type.name):
                if f"[{type_name}](#message-{type_name.lower()})" not in body:
                    missing.append(f"rpc {method.name}: link to {type_name}")
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        if f"message {message.name}" not in headings:
            missing.append(f"message {message.name}")
            continue
        body = section(f"message {message.name}")
        for field in message.fields:
            if not re.search(rf"^\| `{field.name}` \| .* \| {field.number} \|", body, re.MULTILINE):
                missing.append(f"field {message.name}.{field.name}")
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        if f"enum {enum.name}" not in headings:
            missing.append(f"enum {enum.name}")
            continue
        body = section(f"enum {enum.name}")
        for value in enum.values:
            if f"| `{value.name}` | {value.number} |" not in body:
                missing.append(f"value {enum.name}.{value.name}")
    assert not missing, f"missing from docs/api.md: {missing}; run {REGENERATE}"


def test_every_link_in_the_reference_points_at_a_heading_of_it():
    text = API_MD.read_text(encoding="utf-8")
    anchors = {h.lower().replace(" ", "-").replace(".", "")
               for h in re.findall(r"^#{2,4} (.+)$", text, re.MULTILINE)}
    dangling = sorted({a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in anchors})
    assert not dangling, f"links to no heading: {dangling}"
