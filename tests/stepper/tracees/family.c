/* A process tree for the probe counts per process: each process prints "pid=P f=N" after
 * calling the probed `f` N times (f calls sched_yield once: a libc function the shell and the
 * loader never call, for probes by library) (an image that exec's prints its own line first, under the
 * same pid). The root calls f 3 times, forks a child that calls it 2 times then execs ARGV[1]
 * with "exec" (which calls it 4 times: built from this file with -DOTHER, its f lies
 * elsewhere), forks another that calls it 5 times and exits 7, waits for both, calls f
 * once more and exits 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef OTHER
__attribute__((noinline)) int padding(int x) { return x * 3 + 7 - x / 5; }
#endif
volatile int sink;
__attribute__((noinline)) int f(int x) { sink += x; sched_yield(); return x + 1; }
__attribute__((noinline)) int never(int x) { return x * 5 + sink; }

static int calls(int n) {
    int done = 0;
    for (int i = 0; i < n; i++) done = f(done);
    return done;
}

static void report(int n) {
    printf("pid=%d f=%d\n", (int)getpid(), n);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "exec") == 0) {
        report(calls(4));
        return 0;
    }
    if (argc > 5) return never(argc);
    int n = calls(3);
    pid_t a = fork();
    if (a == 0) {
        report(calls(2));
        if (argc > 1) execl(argv[1], argv[1], "exec", (char *)0);
        _exit(1);
    }
    pid_t b = fork();
    if (b == 0) {
        report(calls(5));
        _exit(7);
    }
    int status;
    waitpid(a, &status, 0);
    waitpid(b, &status, 0);
    report(n + calls(1));
    return 3;
}
