/* Calls the probed function `work` argv[1] times in the main thread and as many in a thread
 * it creates, then prints the CPU affinity, scheduling policy and nice value each of the two
 * threads sees: a probed run must print exactly what an unprobed one prints (stepper may
 * move, and lower the priority of, only its own tracer). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static long iters;

__attribute__((noinline)) long work(long x) { return x * 3 + 1; }

static void print_mask(const char *who) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) { perror("sched_getaffinity"); exit(1); }
    printf("%s:", who);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &set)) printf(" %d", cpu);
    printf(" policy=%d nice=%d\n", sched_getscheduler(0), getpriority(PRIO_PROCESS, 0));
}

static void *thread(void *arg) {
    long acc = 0;
    for (long i = 0; i < iters; i++) acc += work(i);
    print_mask("thread");
    return (void *)acc;
}

int main(int argc, char **argv) {
    iters = argc > 1 ? atol(argv[1]) : 1000;
    long acc = 0;
    for (long i = 0; i < iters; i++) acc += work(i);
    print_mask("main");
    fflush(stdout);
    pthread_t t;
    void *result;
    pthread_create(&t, NULL, thread, NULL);
    pthread_join(t, &result);
    printf("sum=%ld\n", acc + (long)result);
    return 0;
}
