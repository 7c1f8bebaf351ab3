/* Bare-metal side of the edgeconv harness: ARM semihosting file I/O (QEMU
 * -semihosting-config enable=on,target=native), SysTick tick counting with wrap-around,
 * and a painted-stack high-water mark. Written for ARMv6-M/v7-M/v8-M. */
#ifndef EDGECONV_SEMIHOSTING_H
#define EDGECONV_SEMIHOSTING_H
#include <stdint.h>
#include <string.h>

enum { SH_OPEN = 0x01, SH_CLOSE = 0x02, SH_WRITE0 = 0x04, SH_WRITE = 0x05, SH_READ = 0x06,
       SH_EXIT_EXTENDED = 0x20 };

static inline int32_t sh_call(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static int32_t sh_open(const char *name, int32_t mode)
{
    const uint32_t args[3] = {(uint32_t)(uintptr_t)name, (uint32_t)mode,
                              (uint32_t)strlen(name)};
    return sh_call(SH_OPEN, args);
}

static int32_t h_in = -1, h_out = -1;

static int hio_open(void)
{
    h_in = sh_open("inputs.bin", 1);   /* "rb" */
    h_out = sh_open("outputs.bin", 5); /* "wb" */
    return (h_in >= 0 && h_out >= 0) ? 0 : -1;
}

static int hio_read(void *buf, int32_t n)
{
    const uint32_t args[3] = {(uint32_t)h_in, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    return sh_call(SH_READ, args) == 0; /* returns the number of bytes NOT read */
}

static int hio_write(const void *buf, int32_t n)
{
    const uint32_t args[3] = {(uint32_t)h_out, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    return sh_call(SH_WRITE, args) == 0;
}

static void hio_close(void)
{
    uint32_t a = (uint32_t)h_in;
    sh_call(SH_CLOSE, &a);
    a = (uint32_t)h_out;
    sh_call(SH_CLOSE, &a);
}

static void hio_print(const char *s) { sh_call(SH_WRITE0, s); }

/* SysTick: 24-bit down-counter on the core clock; the interrupt counts wrap-arounds. */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_RELOAD 0x00FFFFFFu

extern volatile uint32_t systick_wraps; /* incremented by SysTick_Handler (startup.c) */

static void systick_start(void)
{
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* enable, interrupt, processor clock */
}

static uint64_t systick_read(void)
{
    uint32_t w, v;
    do {
        w = systick_wraps;
        v = SYST_CVR;
    } while (w != systick_wraps);
    return (uint64_t)w * (SYST_RELOAD + 1u) + (SYST_RELOAD - v);
}

/* Paint `n` bytes below the current stack frame; returns the lowest painted address. */
static __attribute__((noinline)) uint8_t *stack_paint(uint32_t n)
{
    uint8_t marker;
    uint8_t *top = (uint8_t *)(((uintptr_t)&marker - 64u) & ~(uintptr_t)3u);
    uint8_t *lo = top - n;
    for (uint8_t *p = lo; p < top; p++) *(volatile uint8_t *)p = 0xCDu;
    return lo;
}

/* Lowest address of the painted area that was overwritten (lo + n if none was). */
static uintptr_t stack_low_water(const uint8_t *lo, uint32_t n)
{
    uint32_t i = 0;
    while (i < n && lo[i] == 0xCDu) i++;
    return (uintptr_t)(lo + i);
}
#endif
