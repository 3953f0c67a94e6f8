/* USDT probes through <sys/sdt.h> (systemtap-sdt-dev). Built with -DWITH_SEMAPHORES, each
 * probe has a semaphore: a counter in section .probes that a tracer raises while it probes
 * the site, which the program reads (ENABLED) to know whether anyone listens.
 * Prints the arguments it passes at each probe, and how often it saw demo:tick enabled.
 * `usdt_prog N fork`: a forked child runs the loop first, then the parent does. */
#ifdef WITH_SEMAPHORES
#define _SDT_HAS_SEMAPHORES 1
unsigned short demo_plain_semaphore __attribute__((section(".probes")));
unsigned short demo_tick_semaphore __attribute__((section(".probes")));
#define ENABLED(p) (p##_semaphore)
#else
#define ENABLED(p) 0
#endif
#include <sys/sdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

long counter = 100;

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 5;
    int enabled = 0;
    if (argc > 2) {
        pid_t child = fork();
        if (child > 0)
            waitpid(child, NULL, 0);
        printf("%s\n", child ? "parent" : "child");
    }
    for (int i = 0; i < n; i++) {
        long sq = (long)i * i - 3;
        signed char neg = (signed char)-i;
        printf("plain %d %ld %d\n", i, sq, neg);
        DTRACE_PROBE3(demo, plain, i, sq, neg);
        if (ENABLED(demo_tick))
            enabled++;
        printf("tick %d %ld\n", i, counter + i);
        DTRACE_PROBE2(demo, tick, i, counter + i);
    }
    printf("enabled %d\n", enabled);
    return 0;
}
