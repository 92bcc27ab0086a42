/*
 * arrow/filter_sum: over an Arrow batch (NAB1), keep the rows whose `filter_column`
 * is greater than `threshold` and sum their `sum_column`; nulls never match and are
 * never summed. Params (JSON in the batch): {"filter_column", "threshold", "sum_column"}.
 * Output: a NAB1 batch of one row, columns `count` (int64) and `sum` (float64).
 *
 * An integer filter column is compared exactly (x > floor(threshold)), as pyarrow.compute
 * compares an int64 array with an integer scalar. A float64 sum column without nulls,
 * filtered by an int64 or float64 column without nulls, runs a fused SIMD loop (two rows
 * per 128-bit lane, four lanes a step, no branch per row); every other combination takes
 * the row-at-a-time loop. Built with -O3 -msimd128 (plugins/build.py).
 */
#include "noetl_plugin.h"
#include <wasm_simd128.h>

extern unsigned char __heap_base;
static uintptr_t heap = 0;

NOETL_EXPORT("alloc") void *alloc(int32_t size) {
    if (!heap) heap = ((uintptr_t)&__heap_base + 7) & ~(uintptr_t)7;
    uintptr_t ptr = heap, end = ptr + (uint32_t)size;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uintptr_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    heap = (end + 7) & ~(uintptr_t)7;
    return (void *)ptr;
}

static int streq(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen) {
    if (alen != blen) return 0;
    for (uint32_t i = 0; i < alen; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* Find "key" in the params JSON; returns a pointer just past the ':' (or 0). */
static const uint8_t *find_key(const uint8_t *p, uint32_t n, const char *key) {
    uint32_t klen = 0;
    while (key[klen]) klen++;
    for (uint32_t i = 0; i + klen + 2 < n; i++) {
        if (p[i] == '"' && streq(p + i + 1, klen, (const uint8_t *)key, klen) && p[i + 1 + klen] == '"') {
            uint32_t j = i + 2 + klen;
            while (j < n && (p[j] == ' ' || p[j] == ':')) j++;
            return p + j;
        }
    }
    return 0;
}

static double parse_number(const uint8_t *s, const uint8_t *end) {
    double sign = 1, value = 0, scale = 1;
    int frac = 0;
    if (s < end && *s == '-') { sign = -1; s++; }
    for (; s < end; s++) {
        if (*s >= '0' && *s <= '9') {
            if (frac) { scale /= 10; value += (*s - '0') * scale; }
            else value = value * 10 + (*s - '0');
        } else if (*s == '.' && !frac) frac = 1;
        else break;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        /* an exponent, as JSON writes 1e19 or 2.5E-3; past +-400 it is inf or 0 anyway */
        int neg = 0, exp = 0;
        s++;
        if (s < end && (*s == '-' || *s == '+')) neg = *s++ == '-';
        for (; s < end && *s >= '0' && *s <= '9'; s++)
            if (exp < 400) exp = exp * 10 + (*s - '0');
        for (int i = 0; i < exp; i++) value = neg ? value / 10 : value * 10;
    }
    return sign * value;
}

/* A string param: sets *out and *len to the characters between the quotes. */
static int string_param(const uint8_t *p, uint32_t n, const char *key, const uint8_t **out, uint32_t *len) {
    const uint8_t *v = find_key(p, n, key), *end = p + n;
    if (!v || v >= end || *v != '"') return 0;
    const uint8_t *s = ++v;
    while (v < end && *v != '"') v++;
    *out = s;
    *len = (uint32_t)(v - s);
    return 1;
}

static const nab_column *column_named(const nab_header *h, const uint8_t *name, uint32_t len) {
    const nab_column *cols = nab_columns(h);
    for (uint32_t i = 0; i < h->ncols; i++)
        if (streq((const uint8_t *)h + cols[i].name_off, cols[i].name_len, name, len)) return &cols[i];
    return 0;
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* Trap with a clear cause: the host reports it as a WasmTrap. */
static void fail(void) { __builtin_trap(); }

/*
 * x > t over integers is x > floor(t): 0 and *limit = floor(t) when that fits an int64,
 * else 1 (every row matches) or -1 (none does; also for a NaN threshold).
 */
static int int_threshold(double t, int64_t *limit) {
    if (!(t == t) || t >= 9223372036854775808.0) return -1;
    if (t < -9223372036854775808.0) return 1;
    *limit = (int64_t)__builtin_floor(t);
    return 0;
}

static int64_t int_value(const nab_header *h, const nab_column *c, uint32_t row) {
    const uint8_t *v = (const uint8_t *)h + c->values_off;
    return c->type == NAB_INT64 ? ((const int64_t *)v)[row] : (int64_t)((const int32_t *)v)[row];
}

/* Lanes where the mask is set keep the value, the others add +0.0; the count subtracts -1s. */
#define FUSED_STEP(MASK, OFF)                                                              \
    do {                                                                                   \
        v128_t m = MASK(OFF);                                                              \
        acc##OFF = wasm_f64x2_add(acc##OFF, wasm_v128_and(wasm_v128_load(vs + row + 2 * OFF), m)); \
        cnt##OFF = wasm_i64x2_sub(cnt##OFF, m);                                            \
    } while (0)

#define FUSED_LOOP(MASK)                                                                   \
    for (; row + 8 <= n; row += 8) {                                                       \
        FUSED_STEP(MASK, 0); FUSED_STEP(MASK, 1); FUSED_STEP(MASK, 2); FUSED_STEP(MASK, 3); \
    }

/* The SIMD loop; 0 when the columns are not of the kinds it handles. */
static int fast_path(const nab_header *h, const nab_column *fc, const nab_column *sc, double threshold,
                     int64_t *count_out, double *sum_out) {
    if ((fc->flags | sc->flags) & NAB_HAS_VALIDITY) return 0;
    if (sc->type != NAB_FLOAT64 || (fc->type != NAB_INT64 && fc->type != NAB_FLOAT64)) return 0;
    int64_t limit = 0;
    if (fc->type == NAB_INT64 && int_threshold(threshold, &limit) != 0) return 0;
    const uint8_t *base = (const uint8_t *)h;
    const double *vs = (const double *)(base + sc->values_off);
    uint32_t n = h->nrows, row = 0;
    v128_t zero = wasm_f64x2_splat(0.0);
    v128_t acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero;
    v128_t cnt0 = wasm_i64x2_splat(0), cnt1 = cnt0, cnt2 = cnt0, cnt3 = cnt0;
    int64_t count = 0;
    double tail = 0;
    if (fc->type == NAB_INT64) {
        const int64_t *xs = (const int64_t *)(base + fc->values_off);
        v128_t t = wasm_i64x2_splat(limit);
#define INT_MASK(OFF) wasm_i64x2_gt(wasm_v128_load(xs + row + 2 * OFF), t)
        FUSED_LOOP(INT_MASK)
#undef INT_MASK
        for (; row < n; row++)
            if (xs[row] > limit) { count++; tail += vs[row]; }
    } else {
        const double *xs = (const double *)(base + fc->values_off);
        v128_t t = wasm_f64x2_splat(threshold);
#define FLOAT_MASK(OFF) wasm_f64x2_gt(wasm_v128_load(xs + row + 2 * OFF), t)
        FUSED_LOOP(FLOAT_MASK)
#undef FLOAT_MASK
        for (; row < n; row++)
            if (xs[row] > threshold) { count++; tail += vs[row]; }
    }
    v128_t acc = wasm_f64x2_add(wasm_f64x2_add(acc0, acc1), wasm_f64x2_add(acc2, acc3));
    v128_t cnt = wasm_i64x2_add(wasm_i64x2_add(cnt0, cnt1), wasm_i64x2_add(cnt2, cnt3));
    *sum_out = wasm_f64x2_extract_lane(acc, 0) + wasm_f64x2_extract_lane(acc, 1) + tail;
    *count_out = wasm_i64x2_extract_lane(cnt, 0) + wasm_i64x2_extract_lane(cnt, 1) + count;
    return 1;
}

NOETL_EXPORT("run") int64_t run(const uint8_t *in, int32_t len) {
    const nab_header *h = (const nab_header *)in;
    if ((uint32_t)len < sizeof(nab_header) || h->magic != NAB_MAGIC) fail();
    const uint8_t *params = in + h->params_off;
    const uint8_t *fname, *sname;
    uint32_t flen, slen;
    if (!string_param(params, h->params_len, "filter_column", &fname, &flen)) fail();
    if (!string_param(params, h->params_len, "sum_column", &sname, &slen)) fail();
    const uint8_t *t = find_key(params, h->params_len, "threshold");
    if (!t) fail();
    double threshold = parse_number(t, params + h->params_len);
    const nab_column *fc = column_named(h, fname, flen), *sc = column_named(h, sname, slen);
    if (!fc || !sc) fail();

    int64_t count = 0;
    double sum = 0;
    if (!fast_path(h, fc, sc, threshold, &count, &sum)) {
        int exact = fc->type == NAB_INT64 || fc->type == NAB_INT32;
        int64_t limit = 0;
        int range = exact ? int_threshold(threshold, &limit) : 0;
        for (uint32_t row = 0; row < h->nrows; row++) {
            if (!nab_valid(h, fc, row)) continue;
            int hit = !exact ? nab_value(h, fc, row) > threshold
                    : range == 0 ? int_value(h, fc, row) > limit
                                 : range > 0;
            if (!hit) continue;
            count++;
            if (nab_valid(h, sc, row)) sum += nab_value(h, sc, row);
        }
    }

    /* header 24 + 2 columns x 32 + names "count""sum" (8) = 96; buffers at 96 and 104 */
    uint8_t *out = alloc(112);
    if (!out) fail();
    for (int i = 0; i < 112; i++) out[i] = 0;
    put32(out, NAB_MAGIC); put32(out + 4, 1); put32(out + 8, 2); put32(out + 12, 1);
    uint8_t *c0 = out + 24, *c1 = out + 56;
    put32(c0, NAB_INT64); put32(c0 + 8, 88); put32(c0 + 12, 5); put32(c0 + 20, 96); put32(c0 + 24, 8);
    put32(c1, NAB_FLOAT64); put32(c1 + 8, 93); put32(c1 + 12, 3); put32(c1 + 20, 104); put32(c1 + 24, 8);
    const char *names = "countsum";
    for (int i = 0; i < 8; i++) out[88 + i] = (uint8_t)names[i];
    *(int64_t *)(out + 96) = count;
    *(double *)(out + 104) = sum;
    return noetl_output(out, 112);
}
