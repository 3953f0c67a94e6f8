/* Tracee of the return-breakpoint tests (tests/stepper/test_returns.py): each mode prints
 * what its calls returned, so on_return's values can be checked against the program. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tail_outer(int x);      /* returns_asm.S: jmp tail_inner */
int tail_inner(int x);
int skippable(int x);       /* returns_asm.S: x + 100, the add at skip_site */
int rejoin(int n);          /* returns_asm.S: tail_inner's return address is a jump target */

__attribute__((noinline, noclone)) long compute(long x) {
    volatile long acc = 0;
    for (long i = 0; i < 50; i++)
        acc += x;
    if (x == 7)
        raise(SIGUSR1);     /* the handler calls compute again, on this stack */
    return acc + 1;
}

__attribute__((noinline, noclone)) long fib(long n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static jmp_buf env;

__attribute__((noinline, noclone)) int deep(int i) {
    if (i & 1)
        longjmp(env, i);
    return i * 3;
}

__attribute__((noinline, noclone)) int jumper(int i) {
    volatile int r = deep(i);
    return r + 1;
}

__attribute__((noinline, noclone)) int forker(void) {
    pid_t pid = fork();
    return pid == 0 ? 11 : 22;
}

__attribute__((noinline, noclone)) int exec_self(const char *self) {
    execl(self, self, "args", (char *)NULL);
    return -1;
}

static void on_usr1(int sig) {
    (void)sig;
    printf("handler compute(1000)=%ld\n", compute(1000));
}

static void *worker(void *arg) {
    long base = (long)arg * 1000;
    char line[64];
    for (long i = 0; i < 200; i++) {
        long r = compute(base + i);
        snprintf(line, sizeof line, "compute(%ld)=%ld\n", base + i, r);
        fputs(line, stdout);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    signal(SIGUSR1, on_usr1);
    if (!strcmp(mode, "threads")) {
        pthread_t t[4];
        for (long i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, worker, (void *)(i + 1));
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
    } else if (!strcmp(mode, "fib")) {
        printf("fib(12)=%ld\n", fib(12));
    } else if (!strcmp(mode, "tail")) {
        for (int i = 0; i < 3; i++)
            printf("tail_outer(%d)=%d\n", i, tail_outer(i));
    } else if (!strcmp(mode, "longjmp")) {
        for (volatile int i = 0; i <= 6; i++) {
            int got = setjmp(env);
            if (got)
                printf("longjmp from deep(%d)\n", got);
            else
                printf("jumper(%d)=%d\n", i, jumper(i));
        }
    } else if (!strcmp(mode, "signal")) {
        for (long i = 5; i < 9; i++)
            printf("compute(%ld)=%ld\n", i, compute(i));
    } else if (!strcmp(mode, "alloc")) {
        char *p = malloc(4099);
        if (p == NULL) {
            puts("out of memory");
            return 3;
        }
        strcpy(p, "allocated");
        puts(p);
        free(p);
    } else if (!strcmp(mode, "fork")) {
        int r = forker();
        printf("forker()=%d\n", r);
        fflush(stdout);
        if (r == 22)
            wait(NULL);
    } else if (!strcmp(mode, "exec")) {
        return exec_self(argv[0]);
    } else if (!strcmp(mode, "rejoin")) {
        printf("rejoin(6)=%d\n", rejoin(6));
        printf("rejoin(3)=%d\n", rejoin(3));
    } else if (!strcmp(mode, "args")) {
        printf("compute(3)=%ld skippable(5)=%d\n", compute(3), skippable(5));
    }
    return 0;
}
