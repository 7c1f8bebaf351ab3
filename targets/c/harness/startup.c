/* Minimal Cortex-M startup for the edgeconv harness under QEMU: vector table (with the
 * SysTick handler), .data copy, .bss zero, main(), then semihosting exit with main's
 * return value as QEMU's exit status. Faults exit with status 99. */
#include <stdint.h>

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(int argc, char **argv);

volatile uint32_t systick_wraps;

static void sh_exit(int32_t code)
{
    uint32_t block[2] = {0x20026u, (uint32_t)code}; /* ADP_Stopped_ApplicationExit */
    register int32_t r0 __asm__("r0") = 0x20;     /* SYS_EXIT_EXTENDED */
    register const void *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) {
    }
}

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    sh_exit(main(0, 0));
}

static void Fault_Handler(void)
{
    static const char msg[] = "edgeconv-harness FAULT\n";
    register int32_t r0 __asm__("r0") = 0x04; /* SYS_WRITE0 */
    register const void *r1 __asm__("r1") = msg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    sh_exit(99);
}

static void SysTick_Handler(void) { systick_wraps++; }

typedef union {
    uint32_t *stack;
    void (*handler)(void);
} vector_t;

#define H(f) {.handler = f}
__attribute__((section(".isr_vector"), used)) const vector_t vector_table[16] = {
    {.stack = &_estack}, H(Reset_Handler), H(Fault_Handler), H(Fault_Handler),
    H(Fault_Handler),    H(Fault_Handler), H(Fault_Handler), H(0),
    H(0),                H(0),             H(0),             H(Fault_Handler),
    H(Fault_Handler),    H(0),             H(Fault_Handler), H(SysTick_Handler),
};
