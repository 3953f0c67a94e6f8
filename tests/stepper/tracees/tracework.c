/* The traced-probe tracee: `work(long a, const char *s)` called N times (argv[1], default
 * 10) with values it prints itself (the first PRINTED calls, as "call a=A s=S u=U"), and
 * `take(const char *p)` once with a bad pointer (a fault for a string fetch), and
 * `edge(a, b)` once with a string that ends at the last byte of a page followed by an
 * inaccessible one, and a string that crosses into the next page (printed as "edge a=A b=B").
 * With a second argument "wait" it prints "ready" and waits for a byte on stdin first, so
 * that stepper can attach (--pid). Exit status: N % 256 (the sum is printed to check it ran). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PRINTED 20

static const char *words[] = {"alpha", "beta gamma", "quote\"d", "", "x"};
unsigned short gauge = 0x1234;   /* read with @gauge:u16 */

__attribute__((noinline)) long work(long a, const char *s, unsigned u) {
    __asm__ volatile("" ::: "memory");
    return a + (long)strlen(s) + u;
}

__attribute__((noinline)) long take(const char *p) {
    __asm__ volatile("" ::: "memory");
    return p != 0;
}

__attribute__((noinline)) long edge(const char *a, const char *b) {
    __asm__ volatile("" ::: "memory");
    return (long)strlen(a) + (long)strlen(b);
}

static void edges(void) {
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(0, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *q = mmap(0, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || q == MAP_FAILED) return;
    mprotect(p + page, page, PROT_NONE);
    char *a = p + page - 6;
    strcpy(a, "edge!");
    char *b = q + page - 5;
    strcpy(b, "cross-page");
    printf("edge a=%s b=%s\n", a, b);
    edge(a, b);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10, sum = 0;
    if (argc > 2 && strcmp(argv[2], "wait") == 0) {
        char c;
        printf("ready\n");
        fflush(stdout);
        if (read(0, &c, 1) != 1) return 99;
    }
    for (long i = 0; i < n; i++) {
        long a = i * 3 - 5;
        const char *s = words[i % 5];
        unsigned u = (unsigned)(i * 1000);
        if (i < PRINTED) printf("call a=%ld s=%s u=%u\n", a, s, u);
        sum += work(a, s, u);
    }
    sum += take((const char *)0x10);
    edges();
    printf("sum=%ld\n", sum);
    return (int)(n % 256);
}
