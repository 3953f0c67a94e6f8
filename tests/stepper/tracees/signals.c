/* Signals while probes are hit: SIGUSR1 raised every 250 calls of the probed `work`, and a
 * SIGALRM timer every 200 us that lands anywhere, including in the middle of XOL steps.
 * Also prints whether SIGPIPE starts ignored (it must not: an unprobed run has it default). */
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>

static volatile long usr1, alrm;
static void on_usr1(int s) { (void)s; usr1++; }
static void on_alrm(int s) { (void)s; alrm++; }

__attribute__((noinline)) long work(long x) { return x * 5 + 2; }

int main(void) {
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGPIPE, NULL, &old);
    printf("sigpipe %s\n", old.sa_handler == SIG_IGN ? "ignored" : "default");
    struct itimerval it = {{0, 500}, {0, 500}};
    setitimer(ITIMER_REAL, &it, NULL);
    long s = 0;
    for (long i = 0; i < 5000; i++) {
        s += work(i);
        if (i % 250 == 0) raise(SIGUSR1);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("sum %ld usr1 %ld\n", s, usr1);
    return 0;
}
