/* The C peer of the instruction-step benchmark: a plain PTRACE_SINGLESTEP loop, the least a
 * tracer does to run a program one instruction at a time.
 *
 *   bench_singlestep STEPS PROGRAM [ARGS...]
 *
 * Starts PROGRAM under PTRACE_TRACEME, waits for its exec stop, then times STEPS rounds of
 * PTRACE_SINGLESTEP + waitpid (no register read: the floor), kills PROGRAM and prints
 * "steps=N ns=T". PROGRAM must run at least STEPS instructions (bench_steploop with an
 * argument loops practically forever). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "bench_singlestep: %s: %s\n", what, strerror(errno));
    exit(2);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_singlestep STEPS PROGRAM [ARGS...]\n");
        return 2;
    }
    long steps = strtol(argv[1], NULL, 10);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFSTOPPED(status))
        die("exec stop");
    long long start = now_ns();
    long done = 0;
    for (; done < steps; done++) {
        if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) < 0)
            die("PTRACE_SINGLESTEP");
        if (waitpid(pid, &status, 0) < 0)
            die("waitpid");
        if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
            break;  /* the program ended or faulted before STEPS */
    }
    long long ns = now_ns() - start;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    printf("steps=%ld ns=%lld\n", done, ns);
    return done == steps ? 0 : 1;
}
