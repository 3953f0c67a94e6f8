/* A program that single-steps itself: `popfq` at tf_on sets TF, the CPU traps after each
 * following instruction (the first trap comes after the instruction that follows popf), the
 * SIGTRAP handler records where each trap landed and clears TF at tf_off. Probed on the popf,
 * it must print the same landings as unprobed. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>

extern char tf_on[], tf_off[];
static volatile long landed[64];
static volatile int traps;

static void on_trap(int sig, siginfo_t *info, void *uc_) {
    ucontext_t *uc = uc_;
    (void)sig;
    long rip = uc->uc_mcontext.gregs[REG_RIP];
    if (traps < 64)
        landed[traps] = rip - (long)tf_on;
    traps++;
    if (rip == (long)tf_off || traps > 60)
        uc->uc_mcontext.gregs[REG_EFL] &= ~0x100L;
    (void)info;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);
    for (int round = 0; round < 3; round++) {
        __asm__ volatile(
            "pushfq\n\t"
            "orq $0x100, (%%rsp)\n\t"
            ".globl tf_on\n"
            "tf_on: popfq\n\t"
            "nop\n\t"
            "addq $1, %%rax\n\t"
            "nop\n\t"
            ".globl tf_off\n"
            "tf_off: nop\n\t"
            "nop\n\t"
            ::: "rax", "memory", "cc");
    }
    printf("traps=%d:", traps);
    for (int i = 0; i < traps && i < 64; i++)
        printf(" %ld", landed[i]);
    printf("\n");
    return 0;
}
