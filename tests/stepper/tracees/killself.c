/* Calls a probed function, then dies of the signal named by argv[1] (a number). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int step(int x) { return x + 1; }

int main(int argc, char **argv) {
    int n = 0;
    for (int i = 0; i < 10; i++) n = step(n);
    printf("n=%d\n", n);
    fflush(stdout);
    signal(atoi(argv[1]), SIG_DFL);
    raise(atoi(argv[1]));
    return 0;
}
