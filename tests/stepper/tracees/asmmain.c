/* Drives asmops.S: prints what each hand-written site computed, so a probed run can be
 * compared byte for byte with an unprobed one. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

long call_ret_imm(long v);
long do_write(const char *buf, long len);
void vec_ops(int avx);
long lock_add(void);
void rep_ops(char *dst, const char *src, long n);
extern long vec_src[4], vec_dst[4], shared_counter;

int main(int argc, char **argv) {
    int rounds = argc > 1 ? 50 : 20;
    int avx = __builtin_cpu_supports("avx2");
    long acc = 0;
    for (int i = 0; i < rounds; i++) {
        acc += call_ret_imm(i);
        char line[32];
        int n = snprintf(line, sizeof line, "line %d\n", i);
        fflush(stdout);
        acc += do_write(line, n);
        vec_ops(avx);
        for (int k = 0; k < 4; k++) acc += vec_dst[k];
        lock_add();
        char dst[64] = {0};
        rep_ops(dst, "the quick brown fox jumps", 20 + i % 5);
        acc += (long)strlen(dst) + dst[3];
    }
    printf("acc=%ld counter=%ld avx=%d\n", acc, shared_counter, avx);
    return 7;
}
