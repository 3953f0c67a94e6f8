/* The tracee of the watchpoint tests; it prints what it did, as the ground truth.
 *   watchpoints threads N ITER  N threads each add 1 to `counter` ITER times under a mutex
 *                               (created after main starts): "writes=N*ITER counter=..."
 *   watchpoints store K         K stores into `counter` by the instruction at `store_site`,
 *                               then one read of it: "writes=K counter=K"
 *   watchpoints waiting N       N threads, then "ready"; each thread reads one byte of stdin,
 *                               then adds 1 to `counter` under the mutex: "writes=N counter=N"
 *   watchpoints call K          calls `watched_fn` K times: "calls=K sum=..."
 *   watchpoints trap K          K times: a store into `counter`, then raise(SIGTRAP), caught:
 *                               "writes=K traps=K"
 *   watchpoints fork K          forks; the child stores into `counter` K times and exits 0,
 *                               then the parent does: "writes=K child=0"
 *   watchpoints onebyte K       runs the one-byte `push` at `one_byte_site` and the `pop` at
 *                               `after_one_byte` K times: "calls=K sum=..." */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long counter;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int iterations;

__attribute__((noinline)) void store(long value) {
    __asm__ volatile(".globl store_site\nstore_site:\n\tmovq %0, counter(%%rip)"
                     :: "r"(value) : "memory");
}

__attribute__((noinline)) long watched_fn(long x) {
    __asm__ volatile("" ::: "memory");
    return x * 3 + 1;
}

__attribute__((noinline)) long push_pop(long x) {
    __asm__ volatile(".globl one_byte_site\none_byte_site:\n\tpush %%rbx\n"
                     ".globl after_one_byte\nafter_one_byte:\n\tpop %%rbx" ::: "memory");
    return x + 2;
}

static volatile sig_atomic_t traps;

static void on_trap(int sig) {
    (void)sig;
    traps++;
}

static void *waiter(void *arg) {
    char c;
    (void)arg;
    if (read(0, &c, 1) != 1)
        return NULL;
    pthread_mutex_lock(&lock);
    counter = counter + 1;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < iterations; i++) {
        pthread_mutex_lock(&lock);
        counter = counter + 1;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "threads") == 0) {
        int n = atoi(argv[2]);
        iterations = atoi(argv[3]);
        pthread_t tids[16];
        for (int i = 0; i < n && i < 16; i++)
            pthread_create(&tids[i], NULL, worker, NULL);
        for (int i = 0; i < n && i < 16; i++)
            pthread_join(tids[i], NULL);
        printf("writes=%d counter=%ld\n", n * iterations, counter);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "waiting") == 0) {
        int n = atoi(argv[2]);
        pthread_t tids[16];
        for (int i = 0; i < n && i < 16; i++)
            pthread_create(&tids[i], NULL, waiter, NULL);
        printf("ready\n");
        fflush(stdout);
        for (int i = 0; i < n && i < 16; i++)
            pthread_join(tids[i], NULL);
        printf("writes=%d counter=%ld\n", n, counter);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "store") == 0) {
        int k = atoi(argv[2]);
        for (int i = 1; i <= k; i++)
            store(i);
        printf("writes=%d counter=%ld\n", k, counter);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "call") == 0) {
        int k = atoi(argv[2]);
        long sum = 0;
        for (int i = 0; i < k; i++)
            sum += watched_fn(i);
        printf("calls=%d sum=%ld\n", k, sum);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "trap") == 0) {
        int k = atoi(argv[2]);
        signal(SIGTRAP, on_trap);
        for (int i = 1; i <= k; i++) {
            store(i);
            raise(SIGTRAP);
        }
        printf("writes=%d traps=%d\n", k, (int)traps);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "fork") == 0) {
        int k = atoi(argv[2]), status = 0;
        pid_t child = fork();
        if (child == 0) {
            for (int i = 1; i <= k; i++)
                store(100 + i);
            _exit(0);
        }
        waitpid(child, &status, 0);
        for (int i = 1; i <= k; i++)
            store(i);
        printf("writes=%d child=%d\n", k, status);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "onebyte") == 0) {
        int k = atoi(argv[2]);
        long sum = 0;
        for (int i = 0; i < k; i++)
            sum += push_pop(i);
        printf("calls=%d sum=%ld\n", k, sum);
        return 0;
    }
    fprintf(stderr, "usage: watchpoints threads N ITER | waiting N | store K | trap K | fork K | call K | onebyte K\n");
    return 2;
}
