// A Freshet function in C (wasi-libc, reactor model): every event becomes one output to the
// default output topic with the same key and headers and the value wrapped in JSON,
// {"offset":N,"value":"..."} (the value as a JSON string, or null). Each batch logs one line to
// stderr. ABI: docs/functions-wasm-abi.md.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))

static uint8_t *input;        // the batch, reused across invocations
static size_t input_cap;
static uint8_t *out;          // the reply, reused across invocations
static size_t out_len, out_cap;

EXPORT("freshet_alloc") uint8_t *freshet_alloc(int32_t size) {
    if ((size_t)size > input_cap) {
        free(input);
        input = malloc(size);
        input_cap = input ? (size_t)size : 0;
    }
    return input;  // NULL (0) when out of memory: the host fails the batch
}

static void reserve(size_t n) {
    if (out_len + n <= out_cap) return;
    size_t cap = out_cap ? out_cap : 4096;
    while (cap < out_len + n) cap *= 2;
    out = realloc(out, cap);
    if (!out) abort();
    out_cap = cap;
}

static void put(const void *bytes, size_t n) {
    reserve(n);
    memcpy(out + out_len, bytes, n);
    out_len += n;
}

static void put_u32(uint32_t v) { put(&v, 4); }  // wasm32 is little-endian

static uint32_t get_u32(const uint8_t **p) {
    uint32_t v;
    memcpy(&v, *p, 4);
    *p += 4;
    return v;
}

static int64_t get_i64(const uint8_t **p) {
    int64_t v;
    memcpy(&v, *p, 8);
    *p += 8;
    return v;
}

// Copies an optional field (i32 length, -1 = null, then the bytes) from *p to the reply.
static void copy_opt(const uint8_t **p) {
    int32_t n = (int32_t)get_u32(p);
    put_u32((uint32_t)n);
    if (n > 0) {
        put(*p, n);
        *p += n;
    }
}

// Appends the value as a JSON string (or null) to the reply.
static void put_json_string(const uint8_t *s, int32_t n) {
    if (n < 0) {
        put("null", 4);
        return;
    }
    put("\"", 1);
    for (int32_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        char esc[7];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = c;
            put(esc, 2);
        } else if (c == '\n') {
            put("\\n", 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(esc, 6);
        } else {
            put(&c, 1);
        }
    }
    put("\"", 1);
}

EXPORT("freshet_handle") int64_t freshet_handle(const uint8_t *p, int32_t len) {
    (void)len;
    out_len = 0;
    uint32_t topic_len = get_u32(&p);
    const uint8_t *topic = p;
    p += topic_len;
    uint32_t count = get_u32(&p);
    fprintf(stderr, "wrap_json: %u events from %.*s\n", count, (int)topic_len, (const char *)topic);

    put_u32(0);      // status: ok
    put_u32(count);  // one output per event
    for (uint32_t i = 0; i < count; i++) {
        p += 4;  // partition
        int64_t offset = get_i64(&p);
        p += 8;  // timestamp
        put_u32(UINT32_MAX);  // topic: -1, the default output topic
        copy_opt(&p);         // key
        int32_t n = (int32_t)get_u32(&p);
        const uint8_t *value = p;
        if (n > 0) p += n;
        // The new value: its length first, filled in after it is written.
        size_t len_at = out_len;
        put_u32(0);
        char prefix[48];
        int k = snprintf(prefix, sizeof prefix, "{\"offset\":%lld,\"value\":", (long long)offset);
        put(prefix, k);
        put_json_string(value, n);
        put("}", 1);
        uint32_t value_len = (uint32_t)(out_len - len_at - 4);
        memcpy(out + len_at, &value_len, 4);
        uint32_t headers = get_u32(&p);  // headers, copied as they are
        put_u32(headers);
        for (uint32_t h = 0; h < headers; h++) {
            uint32_t name_len = get_u32(&p);
            put_u32(name_len);
            put(p, name_len);
            p += name_len;
            copy_opt(&p);
        }
    }
    put_u32(0);  // no failures
    return ((int64_t)(uintptr_t)out << 32) | (int64_t)out_len;
}
