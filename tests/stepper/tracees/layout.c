/* Three pages: read-write, read-only, none. Prints their address, then stops itself
 * (SIGSTOP) so the test can poke at them through stepper's live State, then exits. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 2 * 4096; i++) p[i] = (char)(i * 7);
    mprotect(p + 4096, 4096, PROT_READ);
    mprotect(p + 8192, 4096, PROT_NONE);
    printf("%p\n", (void *)p);
    fflush(stdout);
    raise(SIGSTOP);
    return 0;
}
