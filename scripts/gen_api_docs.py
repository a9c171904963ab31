"""Generate the API reference, docs/api.md, from the comments of proto/claimcore/v1/claims.proto.

    .venv/bin/python scripts/gen_api_docs.py              # writes docs/api.md
    .venv/bin/python scripts/gen_api_docs.py OUT.md       # writes elsewhere (the test does)
    .venv/bin/python scripts/gen_api_docs.py --uncommented  # lists what has no comment; exit 1 if any

protoc (grpcio-tools) parses the proto with --include_source_info into a FileDescriptorSet; the
comments attached to services, RPCs, messages, fields, enums and enum values come from its
SourceCodeInfo. The output depends on nothing but the proto, so it is byte for byte deterministic:
tests/ops/test_api_docs.py regenerates it and fails if the committed docs/api.md differs.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2 as d
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO = PROTO_ROOT / "claimcore" / "v1" / "claims.proto"
OUT = ROOT / "docs" / "api.md"

# Field numbers of descriptor.proto, as SourceCodeInfo.Location paths use them.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE, FILE_SYNTAX = 4, 5, 6, 12
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE = 2
SERVICE_METHOD = 2

SCALARS = {
    d.FieldDescriptorProto.TYPE_DOUBLE: "double",
    d.FieldDescriptorProto.TYPE_FLOAT: "float",
    d.FieldDescriptorProto.TYPE_INT64: "int64",
    d.FieldDescriptorProto.TYPE_UINT64: "uint64",
    d.FieldDescriptorProto.TYPE_INT32: "int32",
    d.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    d.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    d.FieldDescriptorProto.TYPE_BOOL: "bool",
    d.FieldDescriptorProto.TYPE_STRING: "string",
    d.FieldDescriptorProto.TYPE_BYTES: "bytes",
    d.FieldDescriptorProto.TYPE_UINT32: "uint32",
    d.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    d.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    d.FieldDescriptorProto.TYPE_SINT32: "sint32",
    d.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


def load(proto: Path = PROTO) -> d.FileDescriptorProto:
    """The proto's descriptor, with its source code info (comments), as protoc parses it."""
    include = str(Path(protoc.__file__).parent / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", "--include_source_info",
                          f"--descriptor_set_out={out}", str(proto.relative_to(PROTO_ROOT))])
        if rc != 0:
            raise SystemExit(f"protoc failed on {proto}")
        files = d.FileDescriptorSet.FromString(out.read_bytes()).file
    if len(files) != 1:
        raise SystemExit(f"expected one file from protoc, got {len(files)}")
    return files[0]


# ------------------------------------------------------------------ comments


def _lines(comment: str) -> list[str]:
    """A comment's lines without the one space after `//`, and without blank ends."""
    lines = [line[1:] if line.startswith(" ") else line for line in comment.rstrip().split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines


@dataclass(frozen=True)
class Comment:
    lines: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.lines)

    @property
    def preformatted(self) -> bool:
        """Indented lines (aligned lists in the proto) are kept as they are."""
        return any(line.startswith((" ", "\t")) for line in self.lines)

    def paragraphs(self) -> list[str]:
        out: list[list[str]] = [[]]
        for line in self.lines:
            if line.strip():
                out[-1].append(line.strip())
            elif out[-1]:
                out.append([])
        return [" ".join(p) for p in out if p]


def comments(file: d.FileDescriptorProto) -> dict[tuple[int, ...], Comment]:
    """Leading and trailing comments by descriptor path. Detached comments (section rules such as
    `// ----- claims`) belong to nothing and are left out."""
    found: dict[tuple[int, ...], Comment] = {}
    for loc in file.source_code_info.location:
        lines = _lines(loc.leading_comments) + _lines(loc.trailing_comments)
        if lines:
            found[tuple(loc.path)] = Comment(tuple(lines))
    return found


# ------------------------------------------------------------------ markdown

_TOKEN = re.compile(
    r"(?P<code>`[^`]*`)"
    r"|(?P<doc>\bdocs/[a-z0-9-]+\.md\b)"
    r"|(?P<quoted>\"[^\"\s][^\"]*\")"
    r"|(?P<charclass>(?:\[[^\]\s]+\])+(?:\{\d+(?:,\d+)?\})?)"
    r"|(?P<flag>(?<![\w-])--[a-z][a-z0-9-]*)"
    r"|(?P<ident>\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b|\b[A-Z]{5,}\b)"
)
_ESCAPE = re.compile(r"([\\*_<>\[\]|])")


def _code(text: str, in_table: bool) -> str:
    return "`" + (text.replace("|", "\\|") if in_table else text) + "`"


def inline(text: str, in_table: bool = False) -> str:
    """Comment prose as Markdown: ids, flags, patterns and quoted strings become code, references to
    docs/*.md become links (api.md lives in docs/), and whatever else Markdown would read as markup
    is escaped."""
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(_ESCAPE.sub(r"\\\1", text[pos:m.start()]))
        kind, token = m.lastgroup, m.group()
        if kind == "code":
            out.append(_code(token[1:-1], in_table))
        elif kind == "doc":
            out.append(f"[{token}]({token.removeprefix('docs/')})")
        else:
            out.append(_code(token, in_table))
        pos = m.end()
    out.append(_ESCAPE.sub(r"\\\1", text[pos:]))
    return "".join(out)


def block(comment: Comment) -> list[str]:
    """A comment as Markdown paragraphs, or as a text block if it is laid out by hand."""
    if not comment:
        return []
    if comment.preformatted:
        return ["```text", *[line.rstrip() for line in comment.lines], "```", ""]
    out: list[str] = []
    for paragraph in comment.paragraphs():
        out += [inline(paragraph), ""]
    return out


def cell(comment: Comment | None) -> str:
    if not comment:
        return ""
    return inline(" ".join(comment.paragraphs()), in_table=True)


def anchor(kind: str, name: str) -> str:
    """GitHub's anchor for the heading `kind name` (names are [A-Za-z0-9_.])."""
    return f"{kind}-{name}".lower().replace(".", "")


# ------------------------------------------------------------------ the model


@dataclass
class Entry:
    kind: str          # service, rpc, message, enum
    name: str          # as written in the heading (nested types: Parent.Child)
    full: str          # .package.Name, as type_name refers to it
    path: tuple[int, ...]
    proto: object

    @property
    def anchor(self) -> str:
        return anchor(self.kind, self.name)


class Api:
    def __init__(self, file: d.FileDescriptorProto) -> None:
        self.file = file
        self.comments = comments(file)
        self.package = file.package
        self.services: list[Entry] = []
        self.messages: list[Entry] = []
        self.enums: list[Entry] = []
        prefix = f".{self.package}." if self.package else "."
        for i, service in enumerate(file.service):
            self.services.append(Entry("service", service.name, prefix + service.name,
                                       (FILE_SERVICE, i), service))
        for i, enum in enumerate(file.enum_type):
            self.enums.append(Entry("enum", enum.name, prefix + enum.name, (FILE_ENUM, i), enum))
        for i, message in enumerate(file.message_type):
            self._add_message(message, "", prefix, (FILE_MESSAGE, i))
        self.by_full = {e.full: e for e in self.messages + self.enums}
        anchors = [e.anchor for e in self.services + self.messages + self.enums] + [
            anchor("rpc", m.name) for s in self.services for m in s.proto.method]
        duplicates = sorted({a for a in anchors if anchors.count(a) > 1})
        if duplicates:
            raise SystemExit(f"two headings would share an anchor: {duplicates}")

    def _add_message(self, message: d.DescriptorProto, outer: str, prefix: str,
                     path: tuple[int, ...]) -> None:
        name = f"{outer}{message.name}"
        full = prefix + message.name
        if message.options.map_entry:
            self.messages.append(Entry("map", name, full, path, message))  # rendered inline as map<K, V>
            return
        self.messages.append(Entry("message", name, full, path, message))
        for i, enum in enumerate(message.enum_type):
            self.enums.append(Entry("enum", f"{name}.{enum.name}", f"{full}.{enum.name}",
                                    (*path, MESSAGE_ENUM, i), enum))
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, f"{name}.", f"{full}.", (*path, MESSAGE_NESTED, i))

    def comment(self, path: tuple[int, ...]) -> Comment:
        return self.comments.get(path, Comment(()))

    def link(self, type_name: str) -> str:
        entry = self.by_full[type_name]
        return f"[{entry.name}](#{entry.anchor})"

    def field_type(self, field: d.FieldDescriptorProto) -> str:
        if field.type in SCALARS:
            base = SCALARS[field.type]
        else:
            target = self.by_full[field.type_name]
            if target.kind == "map":
                key, value = target.proto.field
                return f"map<{self.field_type(key)}, {self.field_type(value)}>".replace("<", "&lt;")
            base = self.link(field.type_name)
        if field.label == d.FieldDescriptorProto.LABEL_REPEATED:
            return f"repeated {base}"
        if field.proto3_optional:
            return f"optional {base}"
        return base

    def uses(self) -> dict[str, list[str]]:
        """Where each message and enum is used: as an RPC's request or reply, or as a field's type."""
        used: dict[str, list[str]] = {e.full: [] for e in self.messages + self.enums}
        for service in self.services:
            for method in service.proto.method:
                rpc = f"[{service.name}.{method.name}](#{anchor('rpc', method.name)})"
                used[method.input_type].append(f"{rpc} request")
                used[method.output_type].append(f"{rpc} reply")
        for message in self.messages:
            if message.kind != "message":
                continue
            for field in message.proto.field:
                if field.type_name and field.type_name in used:
                    use = f"[{message.name}](#{message.anchor}).`{field.name}`"
                    if use not in used[field.type_name]:
                        used[field.type_name].append(use)
        return used

    def uncommented(self) -> list[str]:
        """Every service, RPC, message, field, enum and enum value that has no comment."""
        missing: list[str] = []
        for service in self.services:
            if not self.comment(service.path):
                missing.append(f"service {service.name}")
            for i, method in enumerate(service.proto.method):
                if not self.comment((*service.path, SERVICE_METHOD, i)):
                    missing.append(f"rpc {service.name}.{method.name}")
        for message in self.messages:
            if message.kind != "message":
                continue
            if not self.comment(message.path):
                missing.append(f"message {message.name}")
            for i, field in enumerate(message.proto.field):
                if not self.comment((*message.path, MESSAGE_FIELD, i)):
                    missing.append(f"field {message.name}.{field.name}")
        for enum in self.enums:
            if not self.comment(enum.path):
                missing.append(f"enum {enum.name}")
            for i, value in enumerate(enum.proto.value):
                if not self.comment((*enum.path, ENUM_VALUE, i)):
                    missing.append(f"value {enum.name}.{value.name}")
        return missing


# ------------------------------------------------------------------ rendering


def render(file: d.FileDescriptorProto) -> str:
    api = Api(file)
    rel = f"proto/{file.name}"
    out = [
        "# API reference",
        "",
        f"<!-- Generated by scripts/gen_api_docs.py from {rel}. Do not edit: change the proto's",
        "     comments and run `.venv/bin/python scripts/gen_api_docs.py`. -->",
        "",
        f"Package `{api.package}`, from [`{rel}`](../{rel}), with every comment it carries. "
        "Generated by `scripts/gen_api_docs.py`; `tests/ops/test_api_docs.py` fails when this page and "
        "the proto disagree. Python stubs: `claimcore.v1.claims_pb2` and `claims_pb2_grpc`. "
        "The design behind the calls is in [architecture.md](architecture.md); limits on every "
        "input in [limits.md](limits.md).",
        "",
    ]
    header = api.comment((FILE_SYNTAX,))
    if header:
        out += ["## Conventions", "", *block(header)]

    out += ["## Contents", ""]
    for service in api.services:
        rpcs = ", ".join(f"[{m.name}](#{anchor('rpc', m.name)})" for m in service.proto.method)
        out.append(f"- [{service.name}](#{service.anchor}): {rpcs}")
    messages = [m for m in api.messages if m.kind == "message"]
    out.append("- Messages: " + ", ".join(f"[{m.name}](#{m.anchor})" for m in messages))
    out.append("- Enums: " + ", ".join(f"[{e.name}](#{e.anchor})" for e in api.enums))
    out.append("")

    out += ["## Services", ""]
    for service in api.services:
        out += [f"### service {service.name}", "", *block(api.comment(service.path))]
        out += ["| RPC | request | reply |", "|---|---|---|"]
        for method in service.proto.method:
            out.append(f"| [{method.name}](#{anchor('rpc', method.name)}) | {_rpc_type(api, method, True)} "
                       f"| {_rpc_type(api, method, False)} |")
        out.append("")
        for i, method in enumerate(service.proto.method):
            out += [f"#### rpc {method.name}", "",
                    f"`{service.full.lstrip('.')}/{method.name}`: {_rpc_type(api, method, True)} → "
                    f"{_rpc_type(api, method, False)}", ""]
            comment = api.comment((*service.path, SERVICE_METHOD, i))
            out += block(comment) if comment else ["*No comment in the proto.*", ""]

    uses = api.uses()
    out += ["## Messages", ""]
    for message in messages:
        out += [f"### message {message.name}", "", *block(api.comment(message.path))]
        if uses[message.full]:
            out += ["Used by: " + ", ".join(uses[message.full]) + ".", ""]
        if not message.proto.field:
            out += ["No fields.", ""]
            continue
        out += ["| field | type | number | comment |", "|---|---|---|---|"]
        for i, field in enumerate(message.proto.field):
            comment = cell(api.comment((*message.path, MESSAGE_FIELD, i)))
            out.append(f"| `{field.name}` | {api.field_type(field)} | {field.number} | {comment} |")
        out.append("")

    out += ["## Enums", ""]
    for enum in api.enums:
        out += [f"### enum {enum.name}", "", *block(api.comment(enum.path))]
        if uses[enum.full]:
            out += ["Used by: " + ", ".join(uses[enum.full]) + ".", ""]
        out += ["| value | number | comment |", "|---|---|---|"]
        for i, value in enumerate(enum.proto.value):
            comment = cell(api.comment((*enum.path, ENUM_VALUE, i)))
            out.append(f"| `{value.name}` | {value.number} | {comment} |")
        out.append("")

    return "\n".join(out).rstrip("\n") + "\n"


def _rpc_type(api: Api, method: d.MethodDescriptorProto, request: bool) -> str:
    name = method.input_type if request else method.output_type
    streaming = method.client_streaming if request else method.server_streaming
    return ("stream " if streaming else "") + api.link(name)


def main(argv: list[str]) -> int:
    file = load()
    if argv[:1] == ["--uncommented"]:
        missing = Api(file).uncommented()
        print("\n".join(missing) if missing else "every element has a comment")
        return 1 if missing else 0
    out = Path(argv[0]) if argv else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(file), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
