/* The C floor of `stepper bench --trace`: the least a ptrace tracer does per call of
 * `long work(long a, const char *s)` (bench_trace.c) for stepper's two traced rows, so their
 * per-call cost (and ltrace's) can be read against what C pays for the same job.
 *
 *   bench_trace_floor MODE SITE ADDR OUT PROGRAM [ARGS...]
 *     MODE  count  per hit: waitpid, GETREGS, the displaced instruction emulated, SETREGS,
 *                  CONT (stepper's counting probe)
 *           args   the same, and the string at rsi read with process_vm_readv (at most 256
 *                  bytes, one read per page it touches) and one line written to OUT, like
 *                  stepper's `a=%di:s64 p=%si s=+0(%si):string --trace -o OUT`:
 *                  `TIME TID bench_trace:work: a=A p=0xP s="S"` (TIME: CLOCK_MONOTONIC
 *                  seconds; OUT fully buffered, 64 KiB)
 *     SITE  work   ADDR must hold `movsbq (%rsi),%rax` (48 0f be 06), emulated as stepper
 *                  does: one byte read at rsi with process_vm_readv, sign-extended into rax,
 *                  rip += 4; other bytes are refused (exit 2) before the program runs
 *           once   any instruction: at its one hit the original byte goes back and the
 *                  program resumes there (the baseline: the breakpoint on `main`)
 *     ADDR  hexadecimal, an absolute address (the program is built -no-pie)
 *     OUT   the trace file (args), or - (count)
 * Prints "bench_trace_floor: hits=N" on stderr at the end; exits as PROGRAM did.
 * A measuring stick, not a debugger: one thread, one breakpoint, no signals of its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STRING_MAX 256
#define PAGE 4096ul
#define BUFFER (1 << 16)

static const unsigned char MOVSBQ[4] = {0x48, 0x0f, 0xbe, 0x06};  /* movsbq (%rsi),%rax */

static void die(const char *what) {
    fprintf(stderr, "bench_trace_floor: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void refuse(const char *why) {
    fprintf(stderr, "bench_trace_floor: %s\n", why);
    exit(2);
}

static pid_t start(char **argv) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (ptrace(PTRACE_TRACEME, 0, 0, 0)) die("PTRACE_TRACEME");
        execv(argv[0], argv);
        die("execv");
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFSTOPPED(status)) die("exec stop");
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_EXITKILL);
    return pid;
}

/* `len` bytes at `addr` of the program, through its own page permissions: the byte count read. */
static ssize_t vm_read(pid_t pid, uint64_t addr, void *buf, size_t len) {
    struct iovec local = {buf, len}, remote = {(void *)addr, len};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

/* The NUL-terminated string at `addr` into buf (STRING_MAX + 1 bytes): one read up to the page
 * end (at most STRING_MAX), a second one on the next page when the first had no NUL. */
static int read_string(pid_t pid, uint64_t addr, char *buf) {
    size_t first = PAGE - (addr & (PAGE - 1));
    if (first > STRING_MAX) first = STRING_MAX;
    ssize_t got = vm_read(pid, addr, buf, first);
    if (got <= 0) return -1;
    size_t len = strnlen(buf, (size_t)got);
    if (len == first && first < STRING_MAX) {
        got = vm_read(pid, addr + first, buf + first, STRING_MAX - first);
        if (got > 0) len += strnlen(buf + first, (size_t)got);
    }
    buf[len] = 0;
    return 0;
}

/* `s` quoted as stepper quotes a string value: backslash, double quote and newline escaped. */
static void put_quoted(FILE *out, const char *s) {
    putc_unlocked('"', out);
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            putc_unlocked('\\', out);
            putc_unlocked(*s, out);
        } else if (*s == '\n') {
            putc_unlocked('\\', out);
            putc_unlocked('n', out);
        } else {
            putc_unlocked(*s, out);
        }
    }
    putc_unlocked('"', out);
}

static void trace_line(FILE *out, pid_t pid, const struct user_regs_struct *regs) {
    struct timespec ts;
    char s[STRING_MAX + 1];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fprintf(out, "%lld.%06ld %d bench_trace:work: a=%lld p=0x%llx s=", (long long)ts.tv_sec,
            ts.tv_nsec / 1000, pid, (long long)regs->rdi, (unsigned long long)regs->rsi);
    if (read_string(pid, regs->rsi, s) == 0)
        put_quoted(out, s);
    else
        fputs("(fault)", out);
    putc_unlocked('\n', out);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: bench_trace_floor count|args work|once ADDR OUT PROGRAM [ARGS...]\n");
        return 2;
    }
    int args = !strcmp(argv[1], "args"), once = !strcmp(argv[2], "once");
    if (!args && strcmp(argv[1], "count")) refuse("MODE must be count or args");
    if (!once && strcmp(argv[2], "work")) refuse("SITE must be work or once");
    uint64_t addr = strtoull(argv[3], 0, 16);
    FILE *out = 0;
    if (args) {
        out = fopen(argv[4], "w");
        if (!out) die(argv[4]);
        if (setvbuf(out, 0, _IOFBF, BUFFER)) die("setvbuf");
    }
    pid_t pid = start(argv + 5);

    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int mem = open(path, O_RDWR);
    if (mem < 0) die("open /proc/PID/mem");
    unsigned char code[4], int3 = 0xcc;
    if (pread(mem, code, sizeof code, addr) != sizeof code) die("read ADDR");
    if (!once && memcmp(code, MOVSBQ, sizeof code)) {
        fprintf(stderr, "bench_trace_floor: ADDR %#llx holds %02x %02x %02x %02x, not "
                "movsbq (%%rsi),%%rax (48 0f be 06): only that instruction is emulated\n",
                (unsigned long long)addr, code[0], code[1], code[2], code[3]);
        kill(pid, SIGKILL);
        return 2;
    }
    if (pwrite(mem, &int3, 1, addr) != 1) die("write INT3");

    struct user_regs_struct regs;
    long hits = 0;
    int status;
    ptrace(PTRACE_CONT, pid, 0, 0);
    for (;;) {
        if (waitpid(pid, &status, 0) != pid) die("waitpid");
        if (!WIFSTOPPED(status)) break;
        int sig = WSTOPSIG(status);
        if (sig != SIGTRAP) {
            ptrace(PTRACE_CONT, pid, 0, sig);
            continue;
        }
        ptrace(PTRACE_GETREGS, pid, 0, &regs);
        if (regs.rip - 1 != addr) {
            ptrace(PTRACE_CONT, pid, 0, SIGTRAP);
            continue;
        }
        hits++;
        if (args) trace_line(out, pid, &regs);
        if (once) {  /* the breakpoint goes: the original byte back, rip at it */
            if (pwrite(mem, code, 1, addr) != 1) die("restore ADDR");
            regs.rip = addr;
        } else {     /* movsbq (%rsi),%rax */
            signed char byte;
            if (vm_read(pid, regs.rsi, &byte, 1) != 1) die("read (%rsi)");
            regs.rax = (unsigned long long)(long long)byte;
            regs.rip = addr + sizeof MOVSBQ;
        }
        ptrace(PTRACE_SETREGS, pid, 0, &regs);
        ptrace(PTRACE_CONT, pid, 0, 0);
    }
    if (out && fclose(out)) die("write OUT");
    fprintf(stderr, "bench_trace_floor: hits=%ld\n", hits);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}
