/* The postcard helper of the C guest; see postcard.h. */
#include "postcard.h"

#include <stdlib.h>
#include <string.h>

pc_reader pc_reader_new(const uint8_t *data, size_t len) {
    pc_reader r = {data, len, 0, NULL};
    return r;
}

static bool fail(pc_reader *r, const char *why) {
    if (r->error == NULL) {
        r->error = why;
    }
    return false;
}

/* Reads an unsigned LEB128 varint of at most `bits` bits, as postcard does: at most
 * ceil(bits / 7) bytes, and the last one may not carry bits beyond `bits`. */
static bool read_varint_bits(pc_reader *r, unsigned bits, uint64_t *out) {
    if (r->error != NULL) {
        return false;
    }
    unsigned max_bytes = (bits + 6) / 7;
    uint64_t value = 0;
    for (unsigned i = 0; i < max_bytes; i++) {
        if (r->pos >= r->len) {
            return fail(r, "unexpected end of input");
        }
        uint8_t byte = r->data[r->pos++];
        if (i == max_bytes - 1 && (byte >> (bits - 7 * i)) != 0) {
            return fail(r, "varint out of range");
        }
        value |= (uint64_t)(byte & 0x7f) << (7 * i);
        if ((byte & 0x80) == 0) {
            *out = value;
            return true;
        }
    }
    return fail(r, "varint too long");
}

bool pc_read_varint(pc_reader *r, uint64_t *out) { return read_varint_bits(r, 64, out); }

bool pc_read_i64(pc_reader *r, int64_t *out) {
    uint64_t zigzag;
    if (!pc_read_varint(r, &zigzag)) {
        return false;
    }
    *out = (int64_t)((zigzag >> 1) ^ (~(zigzag & 1) + 1));
    return true;
}

bool pc_read_f64(pc_reader *r, double *out) {
    if (r->error != NULL) {
        return false;
    }
    if (r->len - r->pos < 8) {
        return fail(r, "unexpected end of input");
    }
    uint64_t bits = 0;
    for (int i = 7; i >= 0; i--) {
        bits = (bits << 8) | r->data[r->pos + (size_t)i];
    }
    r->pos += 8;
    memcpy(out, &bits, sizeof bits);
    return true;
}

bool pc_read_len(pc_reader *r, size_t *out) {
    uint64_t len;
    if (!read_varint_bits(r, 32, &len)) {
        return false;
    }
    *out = (size_t)len;
    return true;
}

static bool valid_utf8(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
        static const uint32_t min_for_len[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

bool pc_read_str(pc_reader *r, const uint8_t **ptr, size_t *len) {
    size_t n;
    if (!pc_read_len(r, &n)) {
        return false;
    }
    if (r->len - r->pos < n) {
        return fail(r, "unexpected end of input");
    }
    if (!valid_utf8(r->data + r->pos, n)) {
        return fail(r, "invalid UTF-8");
    }
    *ptr = r->data + r->pos;
    *len = n;
    r->pos += n;
    return true;
}

size_t pc_remaining(const pc_reader *r) { return r->len - r->pos; }

static void reserve(pc_writer *w, size_t more) {
    if (w->len + more <= w->cap) {
        return;
    }
    size_t cap = w->cap ? w->cap * 2 : 16;
    while (cap < w->len + more) {
        cap *= 2;
    }
    uint8_t *data = realloc(w->data, cap);
    if (data == NULL) {
        __builtin_trap();
    }
    w->data = data;
    w->cap = cap;
}

void pc_write_varint(pc_writer *w, uint64_t value) {
    reserve(w, 10);
    do {
        uint8_t byte = value & 0x7f;
        value >>= 7;
        w->data[w->len++] = value ? (byte | 0x80) : byte;
    } while (value);
}

void pc_write_i64(pc_writer *w, int64_t value) {
    pc_write_varint(w, ((uint64_t)value << 1) ^ (uint64_t)(value >> 63));
}

void pc_write_f64(pc_writer *w, double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    reserve(w, 8);
    for (int i = 0; i < 8; i++) {
        w->data[w->len++] = (uint8_t)(bits >> (8 * i));
    }
}
