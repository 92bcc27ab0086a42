/*
 * noetl_plugin.h — guest ABI v1 of NoETL WASM plug-ins (docs/wasm.md).
 *
 * A plug-in exports `memory`, `alloc(i32) -> i32` and an entry (default `run`)
 * `(i32 ptr, i32 len) -> i64` returning `((uint64_t)out_ptr << 32) | out_len`.
 * Host imports (module "noetl") exist only when the step grants them; an import the
 * step does not grant makes instantiation fail. Every import returns a status.
 *
 * Build (no libc; plugins/build.py, `make plugins`): python -m ziglang cc \
 *     --target=wasm32-freestanding -O3 -msimd128 -mbulk-memory -nostdlib \
 *     -Wl,--no-entry -Wl,--export-dynamic -Wl,-z,stack-size=65536 -I plugins/include \
 *     plugin.c -o plugin.wasm
 */
#ifndef NOETL_PLUGIN_H
#define NOETL_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define NOETL_OK 0            /* accepted (buffered; flushed after run returns) */
#define NOETL_NO_MEMORY 1     /* the host's per-call intent budget is spent */
#define NOETL_OUT_OF_BOUNDS 2 /* a pointer/length pair is outside linear memory */
#define NOETL_DENIED 3        /* granted but not honoured on this pool */

#define NOETL_EXPORT(name) __attribute__((export_name(name)))
#define NOETL_IMPORT(name) __attribute__((import_module("noetl"), import_name(name)))

/* Host imports: declare only what the step grants in `capabilities`. */
NOETL_IMPORT("event_publish") int32_t noetl_event_publish(const void *data, int32_t len);
NOETL_IMPORT("result_put")
int32_t noetl_result_put(const char *key, int32_t klen, const void *data, int32_t dlen);
NOETL_IMPORT("object_put")
int32_t noetl_object_put(const char *key, int32_t klen, const void *data, int32_t dlen);

/* Pack a run() result. */
static inline int64_t noetl_output(const void *ptr, uint32_t len) {
    return (int64_t)(((uint64_t)(uintptr_t)ptr << 32) | (uint64_t)len);
}

/* Arrow batch encoding "NAB1" (noetl_common.arrow_abi): fixed-width Arrow buffers. */
#define NAB_MAGIC 0x3142414eu /* "NAB1" little-endian */
#define NAB_INT64 1
#define NAB_FLOAT64 2
#define NAB_INT32 3
#define NAB_FLOAT32 4
#define NAB_HAS_VALIDITY 1u

typedef struct {
    uint32_t magic, version, ncols, nrows, params_off, params_len;
} nab_header;

typedef struct {
    uint32_t type, flags, name_off, name_len, validity_off, values_off, values_len, null_count;
} nab_column;

static inline const nab_column *nab_columns(const nab_header *h) {
    return (const nab_column *)((const uint8_t *)h + sizeof(nab_header));
}

static inline int nab_valid(const nab_header *h, const nab_column *c, uint32_t row) {
    if (!(c->flags & NAB_HAS_VALIDITY)) return 1;
    const uint8_t *bits = (const uint8_t *)h + c->validity_off;
    return (bits[row >> 3] >> (row & 7)) & 1;
}

/* Value of a numeric column as double (int64/int32/float32 widened). */
static inline double nab_value(const nab_header *h, const nab_column *c, uint32_t row) {
    const uint8_t *v = (const uint8_t *)h + c->values_off;
    switch (c->type) {
    case NAB_INT64: return (double)((const int64_t *)v)[row];
    case NAB_FLOAT64: return ((const double *)v)[row];
    case NAB_INT32: return (double)((const int32_t *)v)[row];
    default: return (double)((const float *)v)[row];
    }
}

#endif
