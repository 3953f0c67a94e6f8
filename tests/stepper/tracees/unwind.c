/* Call chains for the unwinder tests, built with -O2 -fomit-frame-pointer.
 * argv[1] chooses the path to the innermost function `leaf`:
 *   chain:  main -> f1 -> f2 -> f3 -> f4 -> leaf
 *   qsort:  main -> sort_them -> qsort (libc) -> compare -> leaf
 *   signal: main -> f1 -> ... -> f4 -> leaf -> kill (libc), SIGUSR1 handled by on_signal -> leaf
 *   vdso:   main -> clock_gettime (libc) -> the vDSO
 *   noreturn: main -> ends_in_call -> die (noreturn) -> leaf; the call to die is the last
 *           instruction of ends_in_call: its return address is the next function's
 *   thread: a second thread: start_thread (libc) -> worker -> f1 -> ... -> leaf
 * Each function does work after its call so that no call becomes a tail call. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

volatile long sink;
static int mode_signal;

NOINLINE long leaf(long x) {
    sink += x;
    if (mode_signal && x == 4) {
        mode_signal = 0;
        kill(getpid(), SIGUSR1);
    }
    return sink * 3 + x;
}

NOINLINE long f4(long x) { long r = leaf(x + 1); sink ^= r; return r + 4; }
NOINLINE long f3(long x) { long r = f4(x + 1); sink ^= r; return r + 3; }
NOINLINE long f2(long x) { long r = f3(x + 1); sink ^= r; return r + 2; }
NOINLINE long f1(long x) { long r = f2(x + 1); sink ^= r; return r + 1; }

static void on_signal(int sig) { sink += leaf(sig * 100); }

NOINLINE __attribute__((noreturn)) void die(long x) {
    sink += leaf(x);
    printf("noreturn %ld\n", sink);
    exit(0);
}

NOINLINE void ends_in_call(long x) { sink += x; die(x + 1); }

NOINLINE long after_ends_in_call(long x) { return x * 7 + sink; }

static void *worker(void *arg) { sink += f1((long)arg); return NULL; }

NOINLINE int compare(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    leaf(x * 1000 + y);
    return (x > y) - (x < y);
}

NOINLINE long sort_them(void) {
    long values[] = {3, 1, 2};
    qsort(values, 3, sizeof values[0], compare);
    return values[0] * 100 + values[1] * 10 + values[2];
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "chain";
    long r = 0;
    if (strcmp(mode, "chain") == 0) {
        r = f1(0);
    } else if (strcmp(mode, "qsort") == 0) {
        r = sort_them();
    } else if (strcmp(mode, "signal") == 0) {
        signal(SIGUSR1, on_signal);
        mode_signal = 1;
        r = f1(0);
    } else if (strcmp(mode, "noreturn") == 0) {
        ends_in_call(argc);
        r = after_ends_in_call(argc);
    } else if (strcmp(mode, "thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
        pthread_join(t, NULL);
        r = sink != 0;
    } else if (strcmp(mode, "vdso") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = ts.tv_nsec >= 0;
    }
    printf("%s %ld\n", mode, r);
    return 0;
}
