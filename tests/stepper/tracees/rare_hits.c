/* Calls the probed function `work` argv[1] times, sleeping argv[2] microseconds before each
 * call: a program whose breakpoint hits are rare, for the tracer's waiting (it must neither
 * miss a stop nor burn a CPU between them). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) long work(long x) { return x * 3 + 1; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10, us = argc > 2 ? atol(argv[2]) : 1000, acc = 0;
    struct timespec pause = {us / 1000000, (us % 1000000) * 1000};
    for (long i = 0; i < n; i++) {
        nanosleep(&pause, NULL);
        acc += work(i);
    }
    printf("sum=%ld\n", acc);
    return 0;
}
