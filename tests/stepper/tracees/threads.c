/* 8 threads each call the probed function `work` ITERS times (argv[1], default 10000);
 * with argv[2] == "lock" they instead add to one counter through lock_add (probed) and
 * native_lock_add (an unprobed copy), and the exact total is printed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
long lock_add(void);
long native_lock_add(void);
extern long shared_counter;

static long iters;
static long results[THREADS];
static int use_lock;

__attribute__((noinline)) long work(long x) { return x * 3 + 1; }

static void *run(void *arg) {
    long id = (long)arg, acc = 0;
    for (long i = 0; i < iters; i++) {
        if (use_lock) { lock_add(); native_lock_add(); }
        else acc += work(i + id);
    }
    results[id] = acc;
    return NULL;
}

int main(int argc, char **argv) {
    iters = argc > 1 ? atol(argv[1]) : 10000;
    use_lock = argc > 2 && strcmp(argv[2], "lock") == 0;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)i);
    long total = 0;
    for (int i = 0; i < THREADS; i++) { pthread_join(t[i], NULL); total += results[i]; }
    printf("total=%ld counter=%ld\n", total, shared_counter);
    return 0;
}
