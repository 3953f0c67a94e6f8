/* What a program can read back about its own SIGTRAP after probed code ran: the
 * disposition (handler, flags, mask) and the blocked mask, in and out of a SIGTRAP handler.
 * argv[1] picks the set-up: handler, nodefer, ignore, blocked (SIGTRAP caught, then blocked
 * with sigprocmask), blocked_pending (and a SIGTRAP raised while blocked, pending at the
 * hit), blocked_default (blocked while SIG_DFL), ignore_late (SIG_IGN set and a
 * probe hit before any SIGTRAP arrives), attach (as blocked, but the handler is installed, and
 * SIGTRAP blocked, before the program prints "ready" and waits for a line on stdin: stepper
 * attaches meanwhile and never sees a SIGTRAP delivered before the hit). The probes go on trap_handler (its first
 * instruction) and on trap_callee (a function the handler and main call). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile int traps;
static volatile int work;

__attribute__((noinline)) void trap_callee(void) {
    work++;
    __asm__ volatile("" ::: "memory");
}

static void describe(const char *where) {
    struct sigaction now;
    sigset_t blocked;
    sigaction(SIGTRAP, NULL, &now);
    sigprocmask(SIG_BLOCK, NULL, &blocked);
    const char *h = now.sa_handler == SIG_DFL ? "SIG_DFL"
                  : now.sa_handler == SIG_IGN ? "SIG_IGN" : "handler";
    printf("%s: %s flags=%#lx mask_has_usr1=%d blocked=%d traps=%d\n", where, h,
           (unsigned long)now.sa_flags & ~0x04000000ul, sigismember(&now.sa_mask, SIGUSR1),
           sigismember(&blocked, SIGTRAP), traps);
    fflush(stdout);
}

__attribute__((noinline)) void trap_handler(int sig) {
    (void)sig;
    traps++;
    trap_callee();
    describe("in handler");
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "handler";
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = trap_handler;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sa.sa_flags = SA_RESTART | (strcmp(how, "nodefer") == 0 ? SA_NODEFER : 0);
    int quiet_start = strcmp(how, "blocked_default") == 0 || strcmp(how, "ignore_late") == 0
                      || strcmp(how, "attach") == 0;
    if (strncmp(how, "ignore", 6) == 0)
        signal(SIGTRAP, SIG_IGN);
    else if (strcmp(how, "blocked_default") != 0)
        sigaction(SIGTRAP, &sa, NULL);
    if (!quiet_start)
        raise(SIGTRAP);  /* the program's own SIGTRAP, handled or ignored */
    describe("after raise");
    if (strncmp(how, "blocked", 7) == 0 || strcmp(how, "attach") == 0) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTRAP);
        sigprocmask(SIG_BLOCK, &set, NULL);
        if (strcmp(how, "blocked_pending") == 0)
            raise(SIGTRAP);  /* pending until the unblock below */
        if (strcmp(how, "attach") == 0) {
            char line[16];
            printf("ready\n");
            fflush(stdout);
            if (!fgets(line, sizeof line, stdin))
                return 99;
        }
        trap_callee();
        describe("blocked");
        if (strcmp(how, "blocked_default") == 0)
            return 0;  /* unblocking would deliver nothing; raising would end the program */
        sigprocmask(SIG_UNBLOCK, &set, NULL);
    }
    trap_callee();
    describe("after call");
    raise(SIGTRAP);
    describe("after second raise");
    return traps;
}
