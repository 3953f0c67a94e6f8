/* DWARF parameters: six in registers, one long and one struct on the stack. Built at -O0
 * and -O2 with -g; prints the arguments of each call so that a test can compare them with
 * what it reads at the function's probe address. check() has a cold part gcc -O2 moves
 * away (check.cold): its DWARF code is two ranges. */
#include <stdio.h>
#include <string.h>

struct point { int x, y; };

__attribute__((noinline)) long work(int a, const char *s, long m1, long m2, long m3, long m4,
                                    long seventh, struct point p)
{
    long total = a + (long)strlen(s);
    int local = 3;
    total += m1 + m2 + m3 + m4 + seventh + p.x + p.y + local;
    return total;
}

__attribute__((cold, noinline)) static void report(int v) { fprintf(stderr, "bad %d\n", v); }

__attribute__((noinline)) int check(int v)
{
    if (v < 0) {
        report(v);
        fprintf(stderr, "negative\n");
        v = -v;
    }
    return v * 2;
}

int main(int argc, char **argv)
{
    struct point p = {5, -6};
    long r = 0;
    for (int i = 0; i < 3; i++) {
        const char *s = i % 2 ? "odd" : "even";
        printf("work %d %s %d %d %d %d %d %d %d\n", i + argc, s, 1, -2, 3, 4, 7 * i, p.x, p.y);
        fflush(stdout);
        r += work(i + argc, s, 1, -2, 3, 4, 7 * i, p);
    }
    printf("check %d\n", argc);
    fflush(stdout);
    r += check(argc);
    return r > 0 ? 0 : 1;
}
