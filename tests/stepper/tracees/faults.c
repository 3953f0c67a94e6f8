/* Faulting instructions at probe sites, under handlers that check what the kernel reports:
 * the ucontext RIP must be the site's own address and si_addr the faulting data address
 * (SIGSEGV) or the instruction (SIGFPE), never an XOL slot. Also deep recursion, so that
 * probed pushes grow the stack exactly as unprobed. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

void fault_store(int *p);
int fault_load_rip(void);
unsigned div_by(unsigned a, unsigned b);
extern char fault_store_site[], fault_load_rip_site[], div_site[], guarded_page[];

static sigjmp_buf back;
static void *want_rip, *want_addr;
static int faults;

static void handler(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    void *rip = (void *)uc->uc_mcontext.gregs[REG_RIP];
    printf("%s: rip %s, si_addr %s\n", strsignal(sig),
           rip == want_rip ? "ok" : "WRONG", si->si_addr == want_addr ? "ok" : "WRONG");
    faults++;
    siglongjmp(back, 1);
}

__attribute__((noinline)) long deep(long n) {
    volatile char pad[200];
    pad[0] = (char)n;
    return n == 0 ? pad[0] : deep(n - 1) + pad[0];
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(guarded_page, 4096, PROT_NONE);
    for (int i = 0; i < 3; i++) {
        want_rip = fault_store_site; want_addr = page + 16 * i;
        if (!sigsetjmp(back, 1)) fault_store((int *)(page + 16 * i));
        want_rip = fault_load_rip_site; want_addr = guarded_page + 8;
        if (!sigsetjmp(back, 1)) printf("read %d\n", fault_load_rip());
        want_rip = div_site; want_addr = div_site;
        if (!sigsetjmp(back, 1)) printf("quotient %u\n", div_by(7, i - i));
        printf("ok quotient %u\n", div_by(100, i + 1));
    }
    printf("deep %ld\n", deep(3000));
    printf("faults %d\n", faults);
    return faults;
}
