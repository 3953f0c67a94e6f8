/* The debugger tests' tracee: argv[1] picks what it does, and it prints what happened so a
 * test can check its stops and changes against the program's own account.
 *   args     add(2, 3), show() of a global message, caller(5), mix(7, 9), half(9.0), getpid()
 *   threads  4 threads each call hammer(i) 100 times; each prints its count
 *   signal   raise(SIGUSR1) with a handler that prints, then "done"
 *   spin     loops until killed
 *   busy     a thread loops on busy() while main calls marker() 200 times
 *   longjmp  catcher(i): setjmp, then thrower() longjmps back into it; prints what it returned */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

char message[16] = "hello";
volatile long sink;
volatile int stop_flag;

__attribute__((noinline)) int add(int a, int b) { return a + b; }
__attribute__((noinline)) void show(void) { printf("message=%s\n", message); }
__attribute__((noinline)) int caller(int x) { return add(x, 1) * 2; }
__attribute__((noinline)) long mix(long a, long b) { return ((a * 3 + b) ^ (a >> 2)) - b; }
__attribute__((noinline)) double half(double x) { return x / 2; }
__attribute__((noinline)) void hammer(long i) { sink += i; }
__attribute__((noinline)) long busy(long x) { return x * 7 + sink; }
__attribute__((noinline)) void marker(int i) { sink = i; }

__attribute__((noinline)) void thrower(jmp_buf *where, int i) {
    sink = i;
    longjmp(*where, i + 1);
}

__attribute__((noinline)) int catcher(int i) {
    jmp_buf here;
    volatile int got = setjmp(here);
    if (!got)
        thrower(&here, i);
    return got * 10;
}

static void *hammering(void *arg) {
    long i = (long)arg, n = 0;
    for (int k = 0; k < 100; k++, n++)
        hammer(i);
    printf("hammer %ld: %ld\n", i, n);
    return NULL;
}

static void *busying(void *arg) {
    long x = 0;
    (void)arg;
    while (!stop_flag)
        x += busy(x);
    sink = x;
    return NULL;
}

static void on_usr1(int sig) { (void)sig; printf("got usr1\n"); }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "args";
    if (!strcmp(what, "args")) {
        printf("add=%d\n", add(2, 3));
        show();
        printf("caller=%d\n", caller(5));
        printf("mix=%ld\n", mix(7, 9));
        printf("half=%g\n", half(9.0));
        printf("pid=%d\n", (int)getpid());
    } else if (!strcmp(what, "threads")) {
        pthread_t t[4];
        for (long i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, hammering, (void *)i);
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
    } else if (!strcmp(what, "signal")) {
        signal(SIGUSR1, on_usr1);
        raise(SIGUSR1);
        printf("done\n");
    } else if (!strcmp(what, "longjmp")) {
        printf("catcher=%d\n", catcher(4));
    } else if (!strcmp(what, "spin")) {
        for (;;)
            sink++;
    } else if (!strcmp(what, "busy")) {
        pthread_t t;
        pthread_create(&t, NULL, busying, NULL);
        for (int i = 0; i < 200; i++) {
            marker(i);
            usleep(200);
        }
        stop_flag = 1;
        pthread_join(t, NULL);
        printf("busy done\n");
    }
    return 3;
}
