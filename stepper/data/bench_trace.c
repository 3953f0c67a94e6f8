/* The workload of `stepper bench --trace`: N calls (argv[1]) of `work(a, s)`, a non-inlined
 * function with a number and a string argument, the shape the tracers print per call.
 * With argv[2] "deep", each call goes through five nested non-inlined functions, so that at
 * `work` the stack is 10 frames (work, deep5..deep1, main, libc's two start frames, _start);
 * built without frame pointers, an unwinder must use the CFI for them (the --stack rows). */
#include <stdio.h>
#include <stdlib.h>

static const char *words[] = {"alpha", "beta", "gamma", "delta"};

__attribute__((noinline)) long work(long a, const char *s) {
    __asm__ volatile("" ::: "memory");
    return a + s[0];
}

/* Each level calls the next and adds to its result, so the call is not a tail call. */
#define LEVEL(name, next)                                                          \
    __attribute__((noinline, noclone)) long name(long a, const char *s) {          \
        long r = next(a, s);                                                       \
        __asm__ volatile("" : "+r"(r) :: "memory");                                \
        return r + 1;                                                              \
    }
LEVEL(deep5, work)
LEVEL(deep4, deep5)
LEVEL(deep3, deep4)
LEVEL(deep2, deep3)
LEVEL(deep1, deep2)

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000, sum = 0;
    long (*call)(long, const char *) = argc > 2 && argv[2][0] == 'd' ? deep1 : work;
    for (long i = 0; i < n; i++)
        sum += call(i, words[i & 3]);
    printf("calls=%ld sum=%ld\n", n, sum);
    return 0;
}
