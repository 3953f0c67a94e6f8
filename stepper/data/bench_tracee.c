/* The benchmark tracee of `stepper bench`: calls `probed` N times (N = argv[1]) and exits 0.
 * With a second argument T, T idle threads (blocked in pause()) are started first: the
 * debugger rows' multi-threaded round trip, where an all-stop debugger stops every thread.
 *
 * `probed` is written in assembly so that its first instruction, the one a breakpoint
 * displaces, is exactly the variant's, whatever the compiler would have emitted; the caller
 * cannot inline it. Choose the variant with -D (default BENCH_PUSH):
 *   BENCH_PUSH    push rbp                       (the common function entry)
 *   BENCH_MOV     mov rax, rdi
 *   BENCH_SUB     sub rsp, 8
 *   BENCH_RIPREL  mov rax, qword ptr [rip + bench_word]   (RIP-relative load)
 *   BENCH_SSE     paddq xmm0, xmmword ptr [rip + bench_vec]  (the emulator declines SSE
 *                 arithmetic; it runs out of line with its displacement rewritten)
 *   BENCH_IMUL    imul rax, rdi, 3   (flags the SDM leaves undefined: the emulated hit asks
 *                 the host CPU for them)
 * `bench_slot` is an executable scratch slot for the C floor's XOL twin (c_floor_xol).
 * Build with -no-pie so the symbol's address in the ELF file is its run-time address. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(BENCH_MOV)
#define BENCH_BODY "mov rax, rdi\n ret\n"
#elif defined(BENCH_SUB)
#define BENCH_BODY "sub rsp, 8\n add rsp, 8\n mov rax, rdi\n ret\n"
#elif defined(BENCH_RIPREL)
#define BENCH_BODY "mov rax, qword ptr [rip + bench_word]\n add rax, rdi\n ret\n"
#elif defined(BENCH_IMUL)
#define BENCH_BODY "imul rax, rdi, 3\n ret\n"
#elif defined(BENCH_SSE)
#define BENCH_BODY "paddq xmm0, xmmword ptr [rip + bench_vec]\n movq rax, xmm0\n add rax, rdi\n ret\n"
#else
#define BENCH_BODY "push rbp\n mov rbp, rsp\n mov rax, rdi\n pop rbp\n ret\n"
#endif

__asm__(
    ".intel_syntax noprefix\n"
    ".section .data\n"
    ".balign 16\n"
    "bench_vec: .quad 1, 2\n"
    "bench_word: .quad 3\n"
    ".text\n"
    ".globl probed\n"
    ".type probed, @function\n"
    ".balign 16\n"
    "probed:\n"
    BENCH_BODY
    ".size probed, .-probed\n"
    /* The C floor's XOL twin copies the displaced instruction here and single-steps it. */
    ".globl bench_slot\n"
    ".balign 64\n"
    "bench_slot: .fill 64, 1, 0xcc\n"
    ".att_syntax prefix\n");

long probed(long x);

static void *idle(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, 0, idle, 0) != 0)
            return 1;
    }
    volatile long sink = 0;
    for (long i = 0; i < n; i++)
        sink += probed(i);
    (void)sink;
    return 0;
}
