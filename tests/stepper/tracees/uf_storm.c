/* Under fire: 4 threads call the probed `xwork` ITERS times each (argv[1]) while a SIGALRM
 * timer fires every 50 us (its handler checks that the interrupted RIP is never in the
 * 256 MiB just below the executable, where stepper's XOL area lives), and a sender thread
 * queues exactly RT_SENDS real-time signals (queued, never merged) to the workers, whose
 * handler calls `xwork` too: every one must arrive, so xwork runs exactly 4*ITERS+RT_SENDS
 * times. Prints the deterministic sum, the real-time count, the bad-RIP count, and on its
 * own line how many SIGALRMs were handled (which varies from run to run).
 * The timer stops when the first worker has made its ITERS calls: a traced thread stops at
 * every signal, and one left alone with a SIGALRM every 50 us (longer than a tracer round trip
 * on an idle VM) would find the next one pending on every return from its handler and crawl
 * (minutes instead of a second), probed or not. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <ucontext.h>
#include <unistd.h>

#define WORKERS 4
#define RT_SENDS 400
extern char __executable_start[];
static long iters;
static volatile long rt_got, bad_rip, handler_calls, handler_sum;
static volatile int tids[WORKERS], started, sent_all, finished;
static long results[WORKERS];

__attribute__((noinline)) long xwork(long x) { return x * 7 + 3; }

static void on_alrm(int s, siginfo_t *si, void *ctx) {
    (void)s; (void)si;
    unsigned long rip = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
    unsigned long base = (unsigned long)__executable_start;
    if (rip < base && rip >= base - (256UL << 20)) __atomic_add_fetch(&bad_rip, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&handler_calls, 1, __ATOMIC_SEQ_CST);
}
/* The real-time handler runs into the probe itself. */
static void on_rt(int s) {
    (void)s;
    __atomic_add_fetch(&handler_sum, xwork(1), __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&rt_got, 1, __ATOMIC_SEQ_CST);
}

static void *worker(void *arg) {
    long id = (long)arg, acc = 0;
    tids[id] = syscall(SYS_gettid);
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
    for (long i = 0; i < iters; i++) acc += xwork(i + id);
    results[id] = acc;
    if (__atomic_fetch_add(&finished, 1, __ATOMIC_SEQ_CST) == 0) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);  /* the storm ends with the first worker */
    }
    while (!sent_all) usleep(100);  /* stay a target until every signal was sent */
    return NULL;
}

static void *sender(void *arg) {
    (void)arg;
    while (started < WORKERS) usleep(100);
    for (int i = 0; i < RT_SENDS; i++) {
        syscall(SYS_tgkill, getpid(), tids[i % WORKERS], SIGRTMIN);
        if (i % 8 == 0) usleep(200);
    }
    sent_all = 1;
    return NULL;
}

int main(int argc, char **argv) {
    iters = argc > 1 ? atol(argv[1]) : 2000;
    struct sigaction sa = {0};
    sa.sa_sigaction = on_alrm;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct sigaction rt = {0};
    rt.sa_handler = on_rt;
    rt.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN, &rt, NULL);
    pthread_t t[WORKERS], snd;
    for (long i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, NULL);  /* only workers take the storm */
    pthread_create(&snd, NULL, sender, NULL);
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);
    long total = 0;
    for (int i = 0; i < WORKERS; i++) { pthread_join(t[i], NULL); total += results[i]; }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    pthread_join(snd, NULL);
    while (rt_got < RT_SENDS) usleep(1000);  /* a lost one would hang: the test times out */
    printf("total=%ld rt=%ld bad_rip=%ld handler_sum_ok=%d\n", total, rt_got, bad_rip,
           handler_sum == RT_SENDS * 10);
    printf("alarms=%ld\n", handler_calls);
    return 0;
}
