"""Read an optimized HLO module: what a compiled step does to memory.

``analyze(text, computation)`` walks the top-level instructions of one computation (the
entry of a jitted step, or the body of the ``while`` that ``lax.scan`` lowers to) and
counts the kernels that touch memory: fusions, copies, in-place ``dynamic-update-slice``
writes, reductions. For each it estimates the bytes it moves: every operand it reads plus
the buffer it writes, where an operand read only through ``slice`` or ``dynamic-slice``
costs the slice (a ring slot; one element used to order kernels costs nothing), and a
fusion whose root updates a slice of an operand in place (a ring write) costs only the
slice it writes. This is the traffic of the compiled program with XLA's
own decisions (what it materialises, what it recomputes, what it copies), as opposed to
the minimal traffic of the algorithm (the byte models in ``configs``). A ``call`` is walked
into: XLA:GPU wraps runs of kernels in calls of command-buffer computations.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_ITEMSIZE = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}
_ARRAY = re.compile(r"\b(" + "|".join(_ITEMSIZE) + r")\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION = re.compile(
    r"^\s*(ROOT\s+)?%([\w.\-]+)\s*=\s*(.+?)\s+([a-z][a-z0-9\-]*)\((.*?)\)(.*)$"
)
_OPERAND = re.compile(r"%([\w.\-]+)")
# Instructions that move no data by themselves.
_FREE = frozenset(
    {
        "parameter",
        "get-tuple-element",
        "tuple",
        "bitcast",
        "constant",
        "opt-barrier",
        "while",
        "conditional",
        "after-all",
        "partition-id",
        "replica-id",
    }
)


def _bytes(shape: str) -> int:
    return sum(
        _ITEMSIZE[dtype] * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY.findall(shape)
    )


@dataclass
class _Instruction:
    name: str
    shape: str
    opcode: str
    operands: list[str]
    attributes: str
    root: bool = False

    @property
    def nbytes(self) -> int:
        return _bytes(self.shape)


@dataclass
class Analysis:
    """Kernels and traffic of one computation of an optimized HLO module."""

    fusions: int = 0
    copies: int = 0
    copy_bytes: int = 0
    dynamic_update_slices: int = 0  # in-place slice writes (ring writes), fused or not
    reductions: int = 0  # kernels that contain a reduce
    kernels: int = 0  # every top-level instruction that moves data
    bytes_moved: int = 0  # estimated reads + writes of those kernels
    large_kernels: int = 0  # kernels that touch at least one large buffer
    copied: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "fusions": self.fusions,
            "copies": self.copies,
            "copy_bytes": self.copy_bytes,
            "dynamic_update_slices": self.dynamic_update_slices,
            "reductions": self.reductions,
            "kernels": self.kernels,
            "large_kernels": self.large_kernels,
            "bytes_moved": self.bytes_moved,
        }


def parse(text: str) -> tuple[dict[str, list[_Instruction]], str]:
    """Computations of an HLO module by name, and the name of the entry computation."""
    computations: dict[str, list[_Instruction]] = {}
    entry = ""
    current: list[_Instruction] | None = None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = computations.setdefault(header.group(2), [])
            if header.group(1):
                entry = header.group(2)
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is None:
            continue
        match = _INSTRUCTION.match(line)
        if match:
            root, name, shape, opcode, operands, attributes = match.groups()
            current.append(
                _Instruction(
                    name, shape, opcode, _OPERAND.findall(operands), attributes, bool(root)
                )
            )
    return computations, entry


def _called(instruction: _Instruction, key: str) -> str | None:
    match = re.search(key + r"=%([\w.\-]+)", instruction.attributes)
    return match.group(1) if match else None


def while_body(text: str) -> str | None:
    """The body computation of the first ``while`` of the entry computation.

    Looked for in the entry and in the computations it ``call``s (command buffers).
    """
    computations, entry = parse(text)
    pending, seen = [entry], set()
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for instruction in computations.get(name, []):
            if instruction.opcode == "while":
                return _called(instruction, "body")
            if instruction.opcode == "call":
                pending.append(_called(instruction, "to_apply") or "")
    return None


def _fusion_traffic(body: list[_Instruction], out_bytes: int):
    """(bytes read, bytes written, in-place writes, has reduce) of one fused computation."""
    by_name = {i.name: i for i in body}
    users: dict[str, list[_Instruction]] = {}
    for instruction in body:
        for operand in instruction.operands:
            users.setdefault(operand, []).append(instruction)
    params = {i.name: i for i in body if i.opcode == "parameter"}

    def through_bitcasts(name: str) -> str:
        instruction = by_name.get(name)
        while instruction is not None and instruction.opcode == "bitcast":
            instruction = by_name.get(instruction.operands[0])
        return instruction.name if instruction is not None else name

    root = next((i for i in body if i.root), body[-1])
    in_place = set()
    writes = out_bytes
    dus = 0
    real_root = by_name.get(through_bitcasts(root.name), root)
    if real_root.opcode == "dynamic-update-slice":
        target = through_bitcasts(real_root.operands[0])
        if by_name.get(target) is not None and by_name[target].opcode == "parameter":
            in_place.add(target)
            update = by_name.get(real_root.operands[1])
            writes = update.nbytes if update is not None else 0
        dus = 1
    reads = 0
    for name, instruction in params.items():
        if name in in_place:
            continue
        readers = users.get(name, [])
        # Follow bitcasts to see whether the parameter is only sliced.
        frontier, sliced, whole = list(readers), 0, False
        while frontier:
            user = frontier.pop()
            if user.opcode == "bitcast":
                frontier.extend(users.get(user.name, []))
            elif user.opcode in ("dynamic-slice", "slice"):
                sliced += user.nbytes
            else:
                whole = True
        reads += instruction.nbytes if whole or not readers else sliced
    has_reduce = any(i.opcode == "reduce" for i in body)
    return reads, writes, dus, has_reduce


def analyze(text: str, computation: str | None = None, large: int = 1 << 16) -> Analysis:
    """Kernels and estimated bytes moved by one computation (default: the entry).

    Args:
      text: ``compiled.as_text()``.
      computation: the name of the computation to walk; ``None`` for the entry.
      large: buffers of at least this many bytes count as large (per-parameter state).
    """
    computations, entry = parse(text)
    result = Analysis()
    _walk(computations, computation or entry, large, result)
    return result


def _walk(computations: dict, name: str, large: int, result: Analysis) -> None:
    by_name = {i.name: i for i in computations.get(name, [])}
    for instruction in computations.get(name, []):
        if instruction.opcode == "call":
            _walk(computations, _called(instruction, "to_apply") or "", large, result)
            continue
        if instruction.opcode in _FREE:
            continue
        operand_bytes = [by_name[o].nbytes if o in by_name else 0 for o in instruction.operands]
        out_bytes = instruction.nbytes
        if instruction.opcode == "fusion":
            result.fusions += 1
            called = _called(instruction, "calls")
            reads, writes, dus, has_reduce = _fusion_traffic(
                computations.get(called, []), out_bytes
            )
            result.dynamic_update_slices += dus
            result.reductions += has_reduce
        elif instruction.opcode == "dynamic-update-slice":
            reads = operand_bytes[1] if len(operand_bytes) > 1 else 0
            writes = reads
            result.dynamic_update_slices += 1
        elif instruction.opcode in ("dynamic-slice", "slice"):
            reads = writes = out_bytes
        else:
            reads, writes = sum(operand_bytes), out_bytes
            if instruction.opcode == "copy":
                result.copies += 1
                result.copy_bytes += out_bytes
                result.copied.append(instruction.name)
            if instruction.opcode == "reduce":
                result.reductions += 1
        result.kernels += 1
        result.bytes_moved += reads + writes
        if max([out_bytes, *operand_bytes]) >= large:
            result.large_kernels += 1
