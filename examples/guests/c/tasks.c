/* Example task functions in C: the same `inc`, `add`, `sum`, `fail` and `panic` as the Rust
 * example guest (examples/guests/example), with byte-for-byte equal results. The bindings
 * (task_module.h) are generated from wit/ by `wit-bindgen c`; arguments and results use the
 * postcard encoding (postcard.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postcard.h"
#include "task_module.h"

typedef exports_taskhost_task_tasks_task_error_t task_error;

/* ---- describing the functions ---------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *doc;
    const char *signature;
} function_doc;

static const function_doc FUNCTIONS[] = {
    {"inc", "Returns `x + 1`.", "inc(x: i64) -> i64"},
    {"add", "Returns `a + b`.", "add(a: f64, b: f64) -> f64"},
    {"sum", "Returns the sum of a list of numbers.", "sum(xs: Vec<f64>) -> f64"},
    {"fail", "Always fails with `message`.", "fail(message: String) -> Result<u64, String>"},
    {"panic", "Writes `message` to stderr and traps: the host sees a trap.", "panic(message: String) -> u64"},
};
#define FUNCTION_COUNT (sizeof FUNCTIONS / sizeof FUNCTIONS[0])

void exports_taskhost_task_tasks_functions(exports_taskhost_task_tasks_list_function_info_t *ret) {
    /* The host frees what we return after the call: every string is a malloc'ed copy. */
    ret->len = FUNCTION_COUNT;
    ret->ptr = calloc(FUNCTION_COUNT, sizeof *ret->ptr);
    for (size_t i = 0; i < FUNCTION_COUNT; i++) {
        task_module_string_dup(&ret->ptr[i].name, FUNCTIONS[i].name);
        task_module_string_dup(&ret->ptr[i].doc, FUNCTIONS[i].doc);
        task_module_string_dup(&ret->ptr[i].signature, FUNCTIONS[i].signature);
    }
}

/* ---- errors ---------------------------------------------------------------------------- */

static bool error(task_error *err, uint8_t tag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool error(task_error *err, uint8_t tag, const char *fmt, ...) {
    char text[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    err->tag = tag;
    task_module_string_dup(&err->val.failed, text);
    return false;
}

/* Checks the argument count, as the Rust SDK does ("add takes 2 arguments, got 1"). */
static bool arity(const char *function, size_t expected, const task_module_list_list_u8_t *args,
                  task_error *err) {
    if (args->len == expected) {
        return true;
    }
    return error(err, EXPORTS_TASKHOST_TASK_TASKS_TASK_ERROR_INVALID_INPUT, "%s takes %zu argument%s, got %zu",
                 function, expected, expected == 1 ? "" : "s", args->len);
}

/* Finishes decoding argument `index`: a decoding error or trailing bytes are invalid input. */
static bool decoded(const char *function, size_t index, const char *param, const pc_reader *r, task_error *err) {
    if (r->error != NULL) {
        return error(err, EXPORTS_TASKHOST_TASK_TASKS_TASK_ERROR_INVALID_INPUT,
                     "%s: argument %zu (`%s`) could not be decoded from %zu bytes: %s", function, index, param,
                     r->len, r->error);
    }
    if (pc_remaining(r) != 0) {
        return error(err, EXPORTS_TASKHOST_TASK_TASKS_TASK_ERROR_INVALID_INPUT,
                     "%s: argument %zu (`%s`) has %zu trailing bytes after its value", function, index, param,
                     pc_remaining(r));
    }
    return true;
}

static pc_reader arg(const task_module_list_list_u8_t *args, size_t index) {
    return pc_reader_new(args->ptr[index].ptr, args->ptr[index].len);
}

static bool ok(pc_writer *w, task_module_list_u8_t *ret) {
    ret->ptr = w->data;
    ret->len = w->len;
    return true;
}

/* ---- the task functions ---------------------------------------------------------------- */

static bool task_inc(const task_module_list_list_u8_t *args, task_module_list_u8_t *ret, task_error *err) {
    if (!arity("inc", 1, args, err)) {
        return false;
    }
    pc_reader r = arg(args, 0);
    int64_t x = 0;
    pc_read_i64(&r, &x);
    if (!decoded("inc", 0, "x: i64", &r, err)) {
        return false;
    }
    pc_writer w = {0};
    pc_write_i64(&w, (int64_t)((uint64_t)x + 1)); /* wraps like Rust's wrapping_add */
    return ok(&w, ret);
}

static bool task_add(const task_module_list_list_u8_t *args, task_module_list_u8_t *ret, task_error *err) {
    if (!arity("add", 2, args, err)) {
        return false;
    }
    double a = 0, b = 0;
    pc_reader ra = arg(args, 0);
    pc_read_f64(&ra, &a);
    if (!decoded("add", 0, "a: f64", &ra, err)) {
        return false;
    }
    pc_reader rb = arg(args, 1);
    pc_read_f64(&rb, &b);
    if (!decoded("add", 1, "b: f64", &rb, err)) {
        return false;
    }
    pc_writer w = {0};
    pc_write_f64(&w, a + b);
    return ok(&w, ret);
}

static bool task_sum(const task_module_list_list_u8_t *args, task_module_list_u8_t *ret, task_error *err) {
    if (!arity("sum", 1, args, err)) {
        return false;
    }
    pc_reader r = arg(args, 0);
    size_t n = 0;
    /* Rust's f64 sum starts from -0.0 and adds in order: an empty sum is -0.0. */
    double total = -0.0;
    if (pc_read_len(&r, &n)) {
        for (size_t i = 0; i < n; i++) {
            double x;
            if (!pc_read_f64(&r, &x)) {
                break;
            }
            total += x;
        }
    }
    if (!decoded("sum", 0, "xs: Vec<f64>", &r, err)) {
        return false;
    }
    pc_writer w = {0};
    pc_write_f64(&w, total);
    return ok(&w, ret);
}

/* Reads the one `message: String` argument of `fail` and `panic` into a NUL-terminated copy. */
static char *message_arg(const char *function, const task_module_list_list_u8_t *args, task_error *err) {
    if (!arity(function, 1, args, err)) {
        return NULL;
    }
    pc_reader r = arg(args, 0);
    const uint8_t *text = NULL;
    size_t len = 0;
    pc_read_str(&r, &text, &len);
    if (!decoded(function, 0, "message: String", &r, err)) {
        return NULL;
    }
    char *message = malloc(len + 1);
    memcpy(message, text, len);
    message[len] = '\0';
    return message;
}

static bool task_fail(const task_module_list_list_u8_t *args, task_module_list_u8_t *ret, task_error *err) {
    char *message = message_arg("fail", args, err);
    if (message == NULL) {
        return false;
    }
    err->tag = EXPORTS_TASKHOST_TASK_TASKS_TASK_ERROR_FAILED;
    err->val.failed.ptr = (uint8_t *)message; /* freed by the host's post-return */
    err->val.failed.len = strlen(message);
    return false;
}

static bool task_panic(const task_module_list_list_u8_t *args, task_module_list_u8_t *ret, task_error *err) {
    char *message = message_arg("panic", args, err);
    if (message == NULL) {
        return false;
    }
    fprintf(stderr, "panic: %s\n", message);
    fflush(stderr);
    __builtin_trap();
}

/* ---- dispatch -------------------------------------------------------------------------- */

typedef bool (*task_fn)(const task_module_list_list_u8_t *, task_module_list_u8_t *, task_error *);

static const struct {
    const char *name;
    task_fn fn;
} DISPATCH[] = {
    {"inc", task_inc}, {"add", task_add}, {"sum", task_sum}, {"fail", task_fail}, {"panic", task_panic},
};

bool exports_taskhost_task_tasks_call(task_module_string_t *name, task_module_list_list_u8_t *args,
                                      task_module_list_u8_t *ret, task_error *err) {
    bool result = false;
    bool found = false;
    for (size_t i = 0; i < sizeof DISPATCH / sizeof DISPATCH[0]; i++) {
        if (strlen(DISPATCH[i].name) == name->len && memcmp(DISPATCH[i].name, name->ptr, name->len) == 0) {
            result = DISPATCH[i].fn(args, ret, err);
            found = true;
            break;
        }
    }
    if (!found) {
        err->tag = EXPORTS_TASKHOST_TASK_TASKS_TASK_ERROR_UNKNOWN_FUNCTION;
        task_module_string_dup_n(&err->val.unknown_function, (const char *)name->ptr, name->len);
    }
    /* The arguments belong to the callee. */
    task_module_string_free(name);
    task_module_list_list_u8_free(args);
    return result;
}
