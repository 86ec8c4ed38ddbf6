"""A small reader and writer of the postcard encoding of the basic types (see docs/encoding.md):
unsigned LEB128 varints, zigzag signed integers, little-endian f64, and length-prefixed strings
and lists. Enough for task functions with typed arguments."""

import struct


class DecodeError(Exception):
    """The bytes are not a valid encoding of the expected type."""


class Reader:
    """A cursor over the bytes of one argument."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> bytes:
        if self.remaining() < n:
            raise DecodeError("unexpected end of input")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, bits: int = 64) -> int:
        """An unsigned varint of at most `bits` bits, checked as postcard checks it."""
        max_bytes = (bits + 6) // 7
        value = 0
        for i in range(max_bytes):
            byte = self._take(1)[0]
            if i == max_bytes - 1 and byte >> (bits - 7 * i):
                raise DecodeError("varint out of range")
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise DecodeError("varint too long")

    def i64(self) -> int:
        zigzag = self.varint(64)
        return (zigzag >> 1) ^ -(zigzag & 1)

    def f64(self) -> float:
        return struct.unpack("<d", self._take(8))[0]

    def length(self) -> int:
        """A list or string length: a usize, 32 bits on wasm32."""
        return self.varint(32)

    def string(self) -> str:
        raw = self._take(self.length())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("invalid UTF-8") from None

    def f64_list(self) -> list:
        n = self.length()
        if self.remaining() < 8 * n:
            raise DecodeError("unexpected end of input")
        return list(struct.unpack_from(f"<{n}d", self._take(8 * n)))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def i64(value: int) -> bytes:
    return varint(((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)


def f64(value: float) -> bytes:
    return struct.pack("<d", value)
