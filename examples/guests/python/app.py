"""Example task functions in Python: the same `inc`, `add`, `sum`, `fail` and `panic` as the Rust
example guest (examples/guests/example), with byte-for-byte equal results.

componentize-py builds this module into a component of the `task-module` world of wit/; the
class `Tasks` implements the exported `tasks` interface. Arguments and results use the postcard
encoding (postcard.py)."""

from typing import Callable, List

import postcard
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.tasks import (
    FunctionInfo,
    TaskError_Failed,
    TaskError_InvalidInput,
    TaskError_UnknownFunction,
)


def inc(x: int) -> bytes:
    # Wraps around like Rust's `i64::wrapping_add`.
    return postcard.i64(((x + 1 + 2**63) % 2**64) - 2**63)


def add(a: float, b: float) -> bytes:
    return postcard.f64(a + b)


def sum_(xs: list) -> bytes:
    # Rust's f64 sum starts from -0.0 and adds in order (Python's `sum` may compensate rounding).
    total = -0.0
    for x in xs:
        total += x
    return postcard.f64(total)


def fail(message: str) -> bytes:
    raise Err(TaskError_Failed(message))


def panic(message: str) -> bytes:
    # An uncaught exception other than `Err` ends the call with a trap (the traceback goes to
    # stderr).
    raise RuntimeError(message)


# name -> (doc, parameters as (name, type, decoder), return type, function)
FUNCTIONS = {
    "inc": ("Returns `x + 1`.", [("x", "i64", postcard.Reader.i64)], "i64", inc),
    "add": (
        "Returns `a + b`.",
        [("a", "f64", postcard.Reader.f64), ("b", "f64", postcard.Reader.f64)],
        "f64",
        add,
    ),
    "sum": (
        "Returns the sum of a list of numbers.",
        [("xs", "Vec<f64>", postcard.Reader.f64_list)],
        "f64",
        sum_,
    ),
    "fail": (
        "Always fails with `message`.",
        [("message", "String", postcard.Reader.string)],
        "Result<u64, String>",
        fail,
    ),
    "panic": (
        "Raises an exception with `message`: the host sees a trap.",
        [("message", "String", postcard.Reader.string)],
        "u64",
        panic,
    ),
}


def invalid(text: str) -> Err:
    return Err(TaskError_InvalidInput(text))


def decode_args(name: str, params: list, args: List[bytes]) -> list:
    if len(args) != len(params):
        plural = "" if len(params) == 1 else "s"
        raise invalid(f"{name} takes {len(params)} argument{plural}, got {len(args)}")
    values = []
    for index, ((param, ty, decode), data) in enumerate(zip(params, args)):
        reader = postcard.Reader(bytes(data))
        try:
            value = decode(reader)
        except postcard.DecodeError as err:
            raise invalid(
                f"{name}: argument {index} (`{param}: {ty}`) could not be decoded from {len(data)} bytes: {err}"
            ) from None
        if reader.remaining():
            raise invalid(
                f"{name}: argument {index} (`{param}: {ty}`) has {reader.remaining()} trailing bytes after its value"
            )
        values.append(value)
    return values


class Tasks(exports.Tasks):
    """The exported `tasks` interface."""

    def functions(self) -> List[FunctionInfo]:
        infos = []
        for name, (doc, params, ret, _) in FUNCTIONS.items():
            signature = ", ".join(f"{param}: {ty}" for param, ty, _ in params)
            infos.append(FunctionInfo(name=name, doc=doc, signature=f"{name}({signature}) -> {ret}"))
        return infos

    def call(self, name: str, args: List[bytes]) -> bytes:
        entry = FUNCTIONS.get(name)
        if entry is None:
            raise Err(TaskError_UnknownFunction(name))
        _, params, _, function = entry
        function: Callable[..., bytes]
        return function(*decode_args(name, params, args))
