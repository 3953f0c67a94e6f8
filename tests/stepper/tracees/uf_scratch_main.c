/* Prints the registers scratch_all (uf_scratch.S, in libufscratch.so) leaves after each site:
 * all of them, and the flags where the site defines them (cmpxchg, cmpxchg16b: ZF;
 * pcmpestri: CF ZF SF OF). */
#include <stdio.h>
void scratch_all(unsigned long table[8][15]);
int main(void) {
    static unsigned long t[8][15];
    static const unsigned long flag_mask[8] = {0, 0x40, 0, 0, 0x40, 0, 0x8c1, 0};
    scratch_all(t);
    for (int s = 0; s < 8; s++) {
        printf("site %d:", s);
        for (int r = 0; r < 14; r++) printf(" %lx", t[s][r]);
        printf(" flags %lx\n", t[s][14] & flag_mask[s]);
    }
    return 0;
}
