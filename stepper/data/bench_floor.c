/* The C floor of `stepper bench`: the least a tracer can do to step over one breakpoint on
 * `push rbp`, so stepper's per-hit cost can be read against what C pays for the same job.
 *
 *   bench_floor MODE ADDR SLOT CPU PROGRAM [ARGS...]
 *     MODE  none     trace PROGRAM with no breakpoint (the baseline the others subtract)
 *           emulate  INT3 at ADDR; per hit: waitpid, GETREGS, push rbp done by hand
 *                    (rsp -= 8, the 8 bytes written through /proc/PID/mem), SETREGS, CONT
 *           xol      INT3 at ADDR; per hit: the original byte runs in SLOT (copied there
 *                    once), SETREGS rip=SLOT, SINGLESTEP, waitpid, GETREGS, rip fixed back
 *                    to ADDR+1, SETREGS, CONT
 *     ADDR, SLOT  hexadecimal; CPU  pin PROGRAM to this CPU before exec (-1: inherit)
 * Prints "hits=N ns=T" on stdout: T is the time from the first resume to PROGRAM's exit.
 * Only a one-byte `push rbp` is handled: this is a measuring stick, not a debugger. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "bench_floor: %s: %s\n", what, strerror(errno));
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static pid_t start(char **argv, int cpu) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            if (sched_setaffinity(0, sizeof set, &set)) die("sched_setaffinity");
        }
        if (ptrace(PTRACE_TRACEME, 0, 0, 0)) die("PTRACE_TRACEME");
        execv(argv[0], argv);
        die("execv");
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFSTOPPED(status)) die("exec stop");
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_EXITKILL);
    return pid;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: bench_floor none|emulate|xol ADDR SLOT CPU PROGRAM [ARGS...]\n");
        return 2;
    }
    const char *mode = argv[1];
    uint64_t addr = strtoull(argv[2], 0, 16), slot = strtoull(argv[3], 0, 16);
    int cpu = atoi(argv[4]);
    int emulate = !strcmp(mode, "emulate"), xol = !strcmp(mode, "xol");
    pid_t pid = start(argv + 5, cpu);

    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int mem = open(path, O_RDWR);
    if (mem < 0) die("open /proc/PID/mem");
    unsigned char original, int3 = 0xcc;
    if (emulate || xol) {
        if (pread(mem, &original, 1, addr) != 1) die("read ADDR");
        if (xol && pwrite(mem, &original, 1, slot) != 1) die("write SLOT");
        if (pwrite(mem, &int3, 1, addr) != 1) die("write INT3");
    }

    struct user_regs_struct regs;
    long hits = 0;
    int status;
    uint64_t t0 = now_ns();
    ptrace(PTRACE_CONT, pid, 0, 0);
    for (;;) {
        if (waitpid(pid, &status, 0) != pid) die("waitpid");
        if (!WIFSTOPPED(status)) break;
        int sig = WSTOPSIG(status);
        if (sig != SIGTRAP || !(emulate || xol)) {
            ptrace(PTRACE_CONT, pid, 0, sig == SIGTRAP ? 0 : sig);
            continue;
        }
        ptrace(PTRACE_GETREGS, pid, 0, &regs);
        if (regs.rip - 1 != addr) {
            ptrace(PTRACE_CONT, pid, 0, SIGTRAP);
            continue;
        }
        hits++;
        if (emulate) {  /* push rbp */
            regs.rsp -= 8;
            if (pwrite(mem, &regs.rbp, 8, regs.rsp) != 8) die("write stack");
            regs.rip = addr + 1;
        } else {        /* run the copy in SLOT with one single-step, then fix rip */
            regs.rip = slot;
            ptrace(PTRACE_SETREGS, pid, 0, &regs);
            ptrace(PTRACE_SINGLESTEP, pid, 0, 0);
            if (waitpid(pid, &status, 0) != pid || !WIFSTOPPED(status)) die("step");
            ptrace(PTRACE_GETREGS, pid, 0, &regs);
            regs.rip = regs.rip - slot + addr;
        }
        ptrace(PTRACE_SETREGS, pid, 0, &regs);
        ptrace(PTRACE_CONT, pid, 0, 0);
    }
    uint64_t t1 = now_ns();
    printf("hits=%ld ns=%llu\n", hits, (unsigned long long)(t1 - t0));
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}
