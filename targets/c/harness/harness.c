/* edgeconv verification harness (not part of an export): runs the exported model on
 * every input record of a file and writes the raw outputs, and checks the memory plan.
 *
 * Before each inference the arena and GUARD_BYTES after it are filled with a pattern
 * (alternating 0x5A / 0xA5); afterwards the highest byte that changed is recorded.
 * `touched` = 1 + that offset over all inferences must equal EDGECONV_ARENA_BYTES, and
 * no guard byte may change. Since the pattern differs between inferences, an output
 * that depended on uninitialised arena bytes would also show up as a mismatch.
 *
 * Host build: harness IN_FILE OUT_FILE (stdio). Bare-metal build
 * (EDGECONV_HARNESS_SEMIHOSTING): files inputs.bin / outputs.bin through ARM
 * semihosting, SysTick-based instruction counts (QEMU -icount) and stack high-water.
 * Prints one line: "edgeconv-harness key=value ...". */
#include <stdint.h>
#include <string.h>

#include "model.h"

#define GUARD_BYTES 64
#define REGION_BYTES (EDGECONV_ARENA_BYTES + GUARD_BYTES)

static int32_t region_words[(REGION_BYTES + 3) / 4];
static int8_t in_buf[EDGECONV_INPUT_BYTES];
static int8_t out_buf[EDGECONV_OUTPUT_BYTES];

/* ------------------------------------------------------------------ platform */
#ifdef EDGECONV_HARNESS_SEMIHOSTING
#include "semihosting.h"
#define STACK_PAINT_BYTES 8192
#else
#include <stdio.h>
static FILE *fin, *fout;
static int hio_open(int argc, char **argv)
{
    if (argc < 3) return -1;
    fin = fopen(argv[1], "rb");
    fout = fopen(argv[2], "wb");
    return (fin && fout) ? 0 : -1;
}
static int hio_read(void *buf, int32_t n) { return fread(buf, 1, (size_t)n, fin) == (size_t)n; }
static int hio_write(const void *buf, int32_t n)
{
    return fwrite(buf, 1, (size_t)n, fout) == (size_t)n;
}
static void hio_close(void)
{
    fclose(fin);
    fclose(fout);
}
static void hio_print(const char *s) { fputs(s, stdout); }
#endif

static char line[512];
static int32_t line_len;

static void put_str(const char *s)
{
    while (*s && line_len < (int32_t)sizeof line - 1) line[line_len++] = *s++;
    line[line_len] = 0;
}

static void put_num(const char *key, uint64_t v)
{
    char buf[24];
    int i = 23;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v && i > 0);
    put_str(" ");
    put_str(key);
    put_str("=");
    put_str(&buf[i]);
}

int main(int argc, char **argv)
{
    uint8_t *region = (uint8_t *)region_words;
    uint32_t n = 0, touched = 0, guard_hit = 0, io_error = 0;
#ifdef EDGECONV_HARNESS_SEMIHOSTING
    uint64_t ticks_min = UINT64_MAX, ticks_max = 0, ticks_sum = 0, overhead;
    uint32_t stack_max = 0;
    volatile uint8_t stack_mark = 0;
    (void)argc;
    (void)argv;
    if (hio_open() != 0) return 3;
    systick_start();
    {
        uint64_t t0 = systick_read();
        uint64_t t1 = systick_read();
        overhead = t1 - t0;
    }
#else
    if (hio_open(argc, argv) != 0) return 3;
#endif
    while (hio_read(in_buf, EDGECONV_INPUT_BYTES)) {
        const uint8_t fill = (n & 1u) ? 0xA5u : 0x5Au;
        memset(region, fill, REGION_BYTES);
        memset(out_buf, fill, EDGECONV_OUTPUT_BYTES);
#ifdef EDGECONV_HARNESS_SEMIHOSTING
        uint8_t *stack_lo = stack_paint(STACK_PAINT_BYTES);
        uint64_t t0 = systick_read();
        edgeconv_model_run_arena(in_buf, out_buf, region);
        uint64_t t1 = systick_read();
        /* stack below main's frame used by the inference (and any interrupt in it) */
        uint32_t used = (uint32_t)((uintptr_t)&stack_mark - stack_low_water(stack_lo, STACK_PAINT_BYTES));
        if (used > stack_max) stack_max = used;
        uint64_t dt = t1 - t0 - overhead;
        if (dt < ticks_min) ticks_min = dt;
        if (dt > ticks_max) ticks_max = dt;
        ticks_sum += dt;
#else
        edgeconv_model_run_arena(in_buf, out_buf, region);
#endif
        for (uint32_t j = REGION_BYTES; j > touched; j--) {
            if (region[j - 1] != fill) {
                touched = j;
                break;
            }
        }
        if (touched > EDGECONV_ARENA_BYTES) guard_hit = 1;
        if (!hio_write(out_buf, EDGECONV_OUTPUT_BYTES)) io_error = 1;
        n++;
    }
    hio_close();
    put_str("edgeconv-harness");
    put_num("n", n);
    put_num("arena", EDGECONV_ARENA_BYTES);
    put_num("touched", touched);
    put_num("guard_ok", !guard_hit);
    put_num("io_error", io_error);
#ifdef EDGECONV_HARNESS_SEMIHOSTING
    put_num("ticks_min", n ? ticks_min : 0);
    put_num("ticks_max", ticks_max);
    put_num("ticks_sum", ticks_sum);
    put_num("stack_bytes", stack_max);
#endif
    put_str("\n");
    hio_print(line);
    return (guard_hit || io_error) ? 1 : 0;
}
