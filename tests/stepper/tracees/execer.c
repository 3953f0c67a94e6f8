/* Calls the probed `f` three times, then (with an argument) execs itself without one: the
 * breakpoints of the old image are dropped at exec and the new image runs unprobed. */
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int f(int x) { return x + 1; }
int main(int argc, char **argv) {
    int n = 0;
    for (int i = 0; i < 3; i++) n = f(n);
    printf("n=%d\n", n); fflush(stdout);
    if (argc > 1) execl(argv[0], argv[0], (char *)0);
    return 5;
}
