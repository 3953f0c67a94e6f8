/* Under fire: fork, vfork and exec. The probed `fwork` is called 3 times, then:
 *   fork   - the child calls it 5 times and exits 7; the parent waits, calls it 2 more times;
 *   vfork  - the child calls it 4 times (in the shared memory) then execs argv[2] with
 *            argument "plain"; the parent waits, calls it 2 more times;
 *   orphan - the child waits 300 ms (its parent has exited by then), calls it 5 times,
 *            prints and exits; the parent exits at once;
 *   plain  - prints a line and exits 0 (the exec'd image).
 * Everything prints the values it computed, so a corrupted memory shows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long fwork(long x) { return x * 3 + 1; }

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "fork";
    if (strcmp(what, "plain") == 0) { printf("plain image %ld\n", fwork(10)); return 0; }
    long n = 0;
    for (int i = 0; i < 3; i++) n = fwork(n);
    printf("before %ld\n", n);
    fflush(stdout);
    int status = 0;
    if (strcmp(what, "orphan") == 0) {
        if (fork() == 0) {
            usleep(300000);
            long c = n;
            for (int i = 0; i < 5; i++) c = fwork(c);
            printf("orphan %ld\n", c);
            return 0;
        }
        return 3;
    }
    if (strcmp(what, "fork") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            long c = n;
            for (int i = 0; i < 5; i++) c = fwork(c);
            printf("child %ld\n", c);
            fflush(stdout);
            _exit(7);
        }
        waitpid(pid, &status, 0);
    } else {
        volatile long shared = n;
        pid_t pid = vfork();
        if (pid == 0) {
            for (int i = 0; i < 4; i++) shared = fwork(shared);
            execl(argv[2], argv[2], "plain", (char *)0);
            _exit(127);
        }
        waitpid(pid, &status, 0);
        printf("vfork child wrote %ld\n", shared);
    }
    for (int i = 0; i < 2; i++) n = fwork(n);
    printf("after %ld child exit %d\n", n, WEXITSTATUS(status));
    return 0;
}
