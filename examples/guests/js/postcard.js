// A small reader and writer of the postcard encoding of the basic types (see docs/encoding.md):
// unsigned LEB128 varints, zigzag signed integers, little-endian f64, and length-prefixed strings
// and lists. Enough for task functions with typed arguments. 64-bit integers are BigInts.

/** The bytes are not a valid encoding of the expected type. */
export class DecodeError extends Error {}

/** A cursor over the bytes of one argument (a Uint8Array). */
export class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  remaining() {
    return this.bytes.length - this.pos;
  }

  need(n) {
    if (this.remaining() < n) {
      throw new DecodeError('unexpected end of input');
    }
  }

  /** An unsigned varint of at most `bits` bits, checked as postcard checks it (a BigInt). */
  varint(bits = 64) {
    const maxBytes = Math.ceil(bits / 7);
    let value = 0n;
    for (let i = 0; i < maxBytes; i++) {
      this.need(1);
      const byte = this.bytes[this.pos++];
      if (i === maxBytes - 1 && byte >> (bits - 7 * i) !== 0) {
        throw new DecodeError('varint out of range');
      }
      value |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if ((byte & 0x80) === 0) {
        return value;
      }
    }
    throw new DecodeError('varint too long');
  }

  i64() {
    const zigzag = this.varint(64);
    return (zigzag >> 1n) ^ -(zigzag & 1n);
  }

  f64() {
    this.need(8);
    const value = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return value;
  }

  /** A list or string length: a usize, 32 bits on wasm32. */
  length() {
    return Number(this.varint(32));
  }

  string() {
    const n = this.length();
    this.need(n);
    const raw = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      throw new DecodeError('invalid UTF-8');
    }
  }

  f64List() {
    const n = this.length();
    this.need(8 * n);
    const xs = [];
    for (let i = 0; i < n; i++) {
      xs.push(this.f64());
    }
    return xs;
  }
}

/** Encodes an unsigned BigInt as a varint. */
export function varint(value) {
  const out = [];
  do {
    const byte = Number(value & 0x7fn);
    value >>= 7n;
    out.push(value ? byte | 0x80 : byte);
  } while (value);
  return new Uint8Array(out);
}

/** Encodes a signed 64-bit BigInt with zigzag. */
export function i64(value) {
  return varint(BigInt.asUintN(64, (value << 1n) ^ (value >> 63n)));
}

export function f64(value) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setFloat64(0, value, true);
  return out;
}
