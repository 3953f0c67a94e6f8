/* Under fire: the program ends while stepper is detaching. Two threads sleep in a loop; main
 * calls the probed `leave_now`, which ends the whole process (exit_group) at once. A detach
 * requested from the probe's callback therefore meets a process whose leader is already
 * exiting: the leader is reported only after every other thread was reaped.
 * With an argument, main leaves by pthread_exit instead: a zombie leader, sleepers running. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) void leave_now(int code) { _exit(code); }

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) usleep(1000);
    return NULL;
}

int main(int argc, char **argv) {
    (void)argv;
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, sleeper, NULL);
    if (argc > 1) pthread_exit(NULL);
    usleep(20000);  /* both threads are up (not needed for correctness) */
    leave_now(7);
}
