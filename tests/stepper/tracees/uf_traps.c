/* Runs the sites of uf_traps.S and prints what a probe must not change: every SIGTRAP the
 * program takes (si_code, si_addr and the handler's RIP as offsets from tf_window, TF in the
 * handler's flags), the registers each site leaves (flags masked to the ones `add`, `popf`
 * and friends define), the red zone and its own entry point bytes. Then it maps memory at
 * fixed addresses the way programs do (where mmap put something before, just past its brk
 * after growing it) and runs the out-of-line probe site again: the XOL area must not be in
 * the way, nor be clobbered. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>
#include <ucontext.h>

void tf_window(void);
long own_int3(void);
long pushf_site(void);
long redzone(void);
extern unsigned long regs_out[10];
extern char tf_window_base[] __asm__("tf_window");

static struct { int code; long addr, rip, tf; } traps[64];
static volatile int ntraps;

static void on_trap(int s, siginfo_t *si, void *ctx) {
    (void)s;
    ucontext_t *uc = ctx;
    if (ntraps < 64) {
        traps[ntraps].code = si->si_code;
        traps[ntraps].addr = si->si_addr ? (char *)si->si_addr - tf_window_base : -1;
        traps[ntraps].rip = (char *)uc->uc_mcontext.gregs[REG_RIP] - tf_window_base;
        traps[ntraps].tf = (uc->uc_mcontext.gregs[REG_EFL] & 0x100) != 0;
    }
    ntraps++;
}

static void print_regs(const char *what) {
    printf("%s:", what);
    for (int i = 0; i < 9; i++) printf(" %lx", regs_out[i]);
    printf(" flags %lx\n", regs_out[9] & 0x8d5);
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);
    tf_window();
    print_regs("tf_window");
    for (int i = 0; i < ntraps; i++)
        printf("trap %d: code %d addr %lx rip %lx tf %ld\n", i, traps[i].code, traps[i].addr,
               traps[i].rip, traps[i].tf);
    ntraps = 0;
    long r = own_int3();
    printf("own int3: %ld traps %d code %d rip %lx\n", r, ntraps, traps[0].code, traps[0].rip);
    printf("pushf: tf %ld\n", pushf_site());
    printf("redzone: %ld bytes changed\n", redzone());
    unsigned char *entry = (unsigned char *)getauxval(AT_ENTRY);
    unsigned sum = 0;
    for (int i = 0; i < 64; i++) sum = sum * 31 + entry[i];
    printf("entry bytes %08x\n", sum);
    size_t size = 4 << 20;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p, size);
    void *q = mmap(p, size, PROT_READ | PROT_WRITE | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    memset(q, 0xcc, size);
    char *brk_end = sbrk(0);
    sbrk(1 << 20);
    char *past = (char *)(((unsigned long)sbrk(0) + (2 << 20)) & ~0xfffUL);
    void *r2 = mmap(past, size, PROT_READ | PROT_WRITE | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (r2 != MAP_FAILED) memset(r2, 0xcc, size);
    printf("fixed maps: %d %d brk grew %d\n", q == p, r2 == past, (char *)sbrk(0) > brk_end);
    printf("redzone again: %ld bytes changed\n", redzone());
    return 0;
}
