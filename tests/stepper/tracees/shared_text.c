/* Maps its own file MAP_SHARED, read-only and executable: a page /proc/PID/mem cannot write
 * (not copy-on-write), for the batched-insertion refusal test. ready(page) says where. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

__attribute__((noinline)) void ready(void *page) { __asm__ volatile("" : : "r"(page) : "memory"); }
__attribute__((noinline)) int after(int x) { return x * 3 + 1; }

int main(void) {
    int fd = open("/proc/self/exe", O_RDONLY);
    if (fd < 0)
        return 2;
    void *page = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED)
        return 3;
    ready(page);
    printf("%d\n", after(13));
    return 0;
}
