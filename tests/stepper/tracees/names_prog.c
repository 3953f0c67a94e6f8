/* Probes by name: functions with known call counts (t_one 4n, t_two n, t_three n, getpid n,
 * main 1), a line to probe by FILE:LINE, and an exit status chosen by the test. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) int t_one(int x) {
    return x + 1;
}

__attribute__((noinline)) int t_two(int x) {
    return t_one(x) * 2;
}

__attribute__((noinline)) int t_three(int x) {
    int s = 0;
    for (int i = 0; i < x; i++)
        s += t_one(i); /* LINE: t_three body */
    return s;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 5;
    long acc = 0;
    for (int i = 0; i < n; i++) {
        acc += t_two(i);
        acc += t_three(3);
        acc += getpid() > 0;
    }
    printf("acc=%ld\n", acc);
    return argc > 2 ? atoi(argv[2]) : 0;
}
