/* Instruction shapes at probe sites: prologues, RIP-relative loads and stores of every width,
 * a jump table, `call [rip+x]` (built with -fno-plt) and stack-protector fs: loads (built with
 * -fstack-protector-all). The test probes every instruction of the probe_* functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

signed char g8 = -5;
short g16 = -300;
int g32 = 70000;
long g64 = 1L << 40;
volatile unsigned char s8;
volatile unsigned short s16;
volatile unsigned int s32;
volatile unsigned long s64;

__attribute__((noinline)) long probe_loads(void) { return g8 + g16 + g32 + g64; }

__attribute__((noinline)) void probe_stores(long v) {
    s8 = v; s16 = v; s32 = v; s64 = v;
    g8 = v; g16 = v >> 3; g32 = v >> 5; g64 = v >> 7;
}

__attribute__((noinline)) int probe_switch(int x) {
    switch (x) {  /* distinct code per case: a jump table, not a lookup table */
    case 0: return x * 7 + g8;
    case 1: return g16 - x;
    case 2: return g32 >> x;
    case 3: return (int)(g64 % 1000) + x;
    case 4: return s8 * 3 - x;
    case 5: return s16 ^ x;
    case 6: return (int)(s32 / 7) + x;
    case 7: return (int)(s64 & 0xff) * x;
    case 8: return g8 * g16 + x;
    default: return -1;
    }
}

__attribute__((noinline)) long probe_plt(const char *s) { return strtol(s, NULL, 10) + (long)strlen(s); }

__attribute__((noinline)) int probe_canary(int n) {
    char buf[64];
    snprintf(buf, sizeof buf, "<%d>", n);
    return (int)strlen(buf);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    long acc = 0;
    char num[32];
    for (int i = 0; i < rounds; i++) {
        acc += probe_loads();
        probe_stores(acc + i);
        acc += s8 + s16 + s32 + s64;
        acc += probe_switch(i % 10);
        snprintf(num, sizeof num, "%d", i);
        acc += probe_plt(num);
        acc += probe_canary(i);
    }
    printf("acc=%ld g=%d/%d/%d/%ld\n", acc, g8, g16, g32, g64);
    return (int)(acc & 0x3f);
}
