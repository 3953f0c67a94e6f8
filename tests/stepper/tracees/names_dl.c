/* dlopen()s the library named by argv[1] (unless it is "-") and calls its plug_fn
 * argv[2] times; prints the sum. Also waits for a line on stdin when argv[3] is "wait". */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int n = argc > 2 ? atoi(argv[2]) : 7;
    long sum = 0;
    if (argc > 3 && strcmp(argv[3], "wait") == 0) {
        char line[16];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin))
            return 3;
    }
    if (strcmp(argv[1], "-") != 0) {
        void *h = dlopen(argv[1], RTLD_NOW);
        if (!h) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        int (*f)(int) = (int (*)(int))dlsym(h, "plug_fn");
        for (int i = 0; i < n; i++)
            sum += f(i);
    }
    printf("sum=%ld\n", sum);
    return 0;
}
