// Example task functions in JavaScript: the same `inc`, `add`, `sum`, `fail` and `panic` as the
// Rust example guest (examples/guests/example), with byte-for-byte equal results.
//
// componentize-js builds this module into a component of the `task-module` world of wit/; the
// exported object `tasks` implements the exported `tasks` interface. A `result` return is `ok`
// when the function returns and `err` when it throws a `task-error` value ({ tag, val }).
// Arguments and results use the postcard encoding (postcard.js).
import * as postcard from './postcard.js';

class TaskError {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
  }
}

// name -> { doc, params: [name, type, decoder], ret, run }
const FUNCTIONS = {
  inc: {
    doc: 'Returns `x + 1`.',
    params: [['x', 'i64', (r) => r.i64()]],
    ret: 'i64',
    // Wraps around like Rust's `i64::wrapping_add`.
    run: (x) => postcard.i64(BigInt.asIntN(64, x + 1n)),
  },
  add: {
    doc: 'Returns `a + b`.',
    params: [
      ['a', 'f64', (r) => r.f64()],
      ['b', 'f64', (r) => r.f64()],
    ],
    ret: 'f64',
    run: (a, b) => postcard.f64(a + b),
  },
  sum: {
    doc: 'Returns the sum of a list of numbers.',
    params: [['xs', 'Vec<f64>', (r) => r.f64List()]],
    ret: 'f64',
    run: (xs) => {
      // Rust's f64 sum starts from -0.0 and adds in order: an empty sum is -0.0.
      let total = -0;
      for (const x of xs) {
        total += x;
      }
      return postcard.f64(total);
    },
  },
  fail: {
    doc: 'Always fails with `message`.',
    params: [['message', 'String', (r) => r.string()]],
    ret: 'Result<u64, String>',
    run: (message) => {
      throw new TaskError('failed', message);
    },
  },
  panic: {
    doc: 'Throws an Error with `message`: the host sees a trap.',
    params: [['message', 'String', (r) => r.string()]],
    ret: 'u64',
    run: (message) => {
      throw new Error(message);
    },
  },
};

function decodeArgs(name, params, args) {
  if (args.length !== params.length) {
    const plural = params.length === 1 ? '' : 's';
    throw new TaskError('invalid-input', `${name} takes ${params.length} argument${plural}, got ${args.length}`);
  }
  return params.map(([param, ty, decode], index) => {
    const reader = new postcard.Reader(args[index]);
    let value;
    try {
      value = decode(reader);
    } catch (err) {
      if (!(err instanceof postcard.DecodeError)) {
        throw err;
      }
      throw new TaskError(
        'invalid-input',
        `${name}: argument ${index} (\`${param}: ${ty}\`) could not be decoded from ${args[index].length} bytes: ${err.message}`,
      );
    }
    if (reader.remaining() !== 0) {
      throw new TaskError(
        'invalid-input',
        `${name}: argument ${index} (\`${param}: ${ty}\`) has ${reader.remaining()} trailing bytes after its value`,
      );
    }
    return value;
  });
}

export const tasks = {
  functions() {
    return Object.entries(FUNCTIONS).map(([name, { doc, params, ret }]) => ({
      name,
      doc,
      signature: `${name}(${params.map(([param, ty]) => `${param}: ${ty}`).join(', ')}) -> ${ret}`,
    }));
  },

  call(name, args) {
    const fn = Object.hasOwn(FUNCTIONS, name) ? FUNCTIONS[name] : undefined;
    if (fn === undefined) {
      throw new TaskError('unknown-function', name);
    }
    return fn.run(...decodeArgs(name, fn.params, args));
  },
};
