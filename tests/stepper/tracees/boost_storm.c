/* Four threads run through boosted probes (rep movsb, a RIP-relative SSE load, lock xadd)
 * while SIGALRM arrives every 50 us. The handler records every interrupted RIP outside the
 * executable's text; at the end they are checked against /proc/self/maps: none may be in an
 * anonymous executable mapping (the XOL area) or in no mapping at all. With "reenter" the
 * handler also calls the probed functions itself.
 * The storm stops when the first worker is done. A traced thread stops at every signal it
 * takes: a thread left alone with a signal every 50 us, and a tracer round trip longer than
 * that (measured ~130 us on an idle 2-vCPU VM, where waking a halted vCPU is slow), would take
 * the next signal on every return from its handler and never run its own code again, probed
 * or not. While four threads share the storm, the program always progresses.
 * stdout is deterministic (compared with an unprobed run); counts go to stderr.
 * usage: boost_storm ITERATIONS [reenter] */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>

void boost_copy(void *dst, const void *src, size_t n);
long boost_sse(long *out);
long boost_xadd(long v);
extern char boost_movs_site[], boost_sse_site[], boost_xadd_site[];
extern char __executable_start[], etext[];
extern long boost_counter;

#define THREADS 4
#define SIZE 128
#define MAXREC 4096

static int iterations, reenter;
static unsigned long recorded[MAXREC];
static volatile int nrec, signals, at_site, finished, reentered_ok = 1;

static void handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)si;
    unsigned long rip = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
    int n = __atomic_add_fetch(&signals, 1, __ATOMIC_RELAXED);
    if (rip == (unsigned long)boost_movs_site || rip == (unsigned long)boost_sse_site ||
        rip == (unsigned long)boost_xadd_site)
        __atomic_add_fetch(&at_site, 1, __ATOMIC_RELAXED);
    if (rip < (unsigned long)__executable_start || rip >= (unsigned long)etext) {
        int i = __atomic_fetch_add(&nrec, 1, __ATOMIC_RELAXED);
        if (i < MAXREC) recorded[i] = rip;
    }
    if (reenter && n % 8 == 0) {  /* not every time: the program must make progress */
        char a[64], b[64];
        long v[2];
        memset(a, 'r', sizeof a);
        boost_copy(b, a, sizeof b);
        if (memcmp(a, b, sizeof a) || boost_sse(v) != 0x3333) reentered_ok = 0;
    }
}

static void *worker(void *arg) {
    long id = (long)arg, sum = 0, v[2];
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);  /* the workers take the storm */
    char *src = malloc(SIZE), *dst = malloc(SIZE);
    for (int i = 0; i < iterations; i++) {
        memset(src, 'a' + (i + id) % 26, SIZE);
        boost_copy(dst, src, SIZE);
        if (memcmp(src, dst, SIZE)) { printf("thread %ld: copy %d WRONG\n", id, i); exit(3); }
        sum += boost_sse(v);
        boost_xadd(1);
    }
    free(src); free(dst);
    if (__atomic_fetch_add(&finished, 1, __ATOMIC_RELAXED) == 0) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);  /* the storm ends with the first worker */
    }
    return (void *)sum;
}

static int bad_rips(void) {
    /* A recorded RIP is bad when it is in no mapping, or in an anonymous executable one. */
    int bad = 0, n = nrec < MAXREC ? nrec : MAXREC;
    for (int i = 0; i < n; i++) {
        FILE *f = fopen("/proc/self/maps", "r");
        char line[512];
        int found = 0;
        while (fgets(line, sizeof line, f)) {
            unsigned long lo, hi;
            char perms[8];
            int off = 0;
            if (sscanf(line, "%lx-%lx %7s %*s %*s %*s%n", &lo, &hi, perms, &off) < 3) continue;
            if (recorded[i] < lo || recorded[i] >= hi) continue;
            found = 1;
            char *path = line + off;
            while (*path == ' ') path++;
            if (perms[2] == 'x' && (*path == '\n' || *path == 0)) {
                fprintf(stderr, "RIP %#lx in anonymous executable mapping %s", recorded[i], line);
                bad++;
            }
        }
        fclose(f);
        if (!found) { fprintf(stderr, "RIP %#lx in no mapping\n", recorded[i]); bad++; }
    }
    return bad;
}

int main(int argc, char **argv) {
    iterations = argc > 1 ? atoi(argv[1]) : 200;
    reenter = argc > 2 && !strcmp(argv[2], "reenter");
    struct sigaction sa = {0};
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alrm, NULL);  /* main never takes it (workers unblock it) */
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    long total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("total=%ld counter=%ld reentered=%s bad=%d\n", total, boost_counter,
           reentered_ok ? "ok" : "WRONG", bad_rips());
    fprintf(stderr, "signals=%d at_site=%d outside_text=%d\n", signals, at_site, nrec);
    return 0;
}
