/* The workload of `stepper bench --trace`: N calls (argv[1]) of `work(a, s)`, a non-inlined
 * function with a number and a string argument, the shape the tracers print per call. */
#include <stdio.h>
#include <stdlib.h>

static const char *words[] = {"alpha", "beta", "gamma", "delta"};

__attribute__((noinline)) long work(long a, const char *s) {
    __asm__ volatile("" ::: "memory");
    return a + s[0];
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000, sum = 0;
    for (long i = 0; i < n; i++)
        sum += work(i, words[i & 3]);
    printf("calls=%ld sum=%ld\n", n, sum);
    return 0;
}
