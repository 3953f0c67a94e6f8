/* Under fire: a busy multithreaded process to attach to. Prints "ready" once running, then
 * runs WAVES waves of 4 threads (new threads keep appearing), each calling the probed `bwork`
 * ITERS times; prints the deterministic total at the end. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define WAVES 1500
#define ITERS 20000
__attribute__((noinline)) long bwork(long x) { return (x ^ 0x5a) + 3; }
static long results[4];

static void *run(void *arg) {
    long id = (long)arg, acc = 0;
    for (long i = 0; i < ITERS; i++) acc += bwork(i + id);
    results[id] = acc;
    return NULL;
}

int main(void) {
    printf("ready\n");
    fflush(stdout);
    long total = 0;
    for (int w = 0; w < WAVES; w++) {
        pthread_t t[4];
        for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, run, (void *)i);
        for (int i = 0; i < 4; i++) { pthread_join(t[i], NULL); total += results[i]; }
    }
    printf("total=%ld\n", total);
    return 0;
}
