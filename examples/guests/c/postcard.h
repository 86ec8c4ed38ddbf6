/* A small reader and writer of the postcard encoding of the basic types (see docs/encoding.md):
 * unsigned LEB128 varints, zigzag signed integers, little-endian f64, and length-prefixed
 * strings and lists. Enough for task functions with typed arguments. */
#ifndef TASKHOST_POSTCARD_H
#define TASKHOST_POSTCARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A cursor over the bytes of one argument. On a decoding error, `error` says why and every
 * further read fails. */
typedef struct {
    const uint8_t *data;
    size_t len;
    size_t pos;
    const char *error;
} pc_reader;

pc_reader pc_reader_new(const uint8_t *data, size_t len);
bool pc_read_varint(pc_reader *r, uint64_t *out);
bool pc_read_i64(pc_reader *r, int64_t *out);
bool pc_read_f64(pc_reader *r, double *out);
/* A list or string length (a varint usize, 32 bits on wasm32). */
bool pc_read_len(pc_reader *r, size_t *out);
/* A UTF-8 string: points into the reader's bytes (not NUL-terminated). */
bool pc_read_str(pc_reader *r, const uint8_t **ptr, size_t *len);
/* How many bytes are left after the value. */
size_t pc_remaining(const pc_reader *r);

/* A growable output buffer allocated with malloc; the caller hands `data` to the host. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} pc_writer;

void pc_write_varint(pc_writer *w, uint64_t value);
void pc_write_i64(pc_writer *w, int64_t value);
void pc_write_f64(pc_writer *w, double value);

#endif
