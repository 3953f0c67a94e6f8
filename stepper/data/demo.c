/* The demo program of `make demo`: a few small functions with known call counts, so the hit
 * table can be checked by eye. Built with -O0 -fno-inline so every call is a real call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct account { const char *owner; long balance; };

static long fee(long amount) { return amount / 100 + 1; }

long deposit(struct account *a, long amount) { a->balance += amount; return a->balance; }

long withdraw(struct account *a, long amount) {
    long total = amount + fee(amount);
    if (total > a->balance) return -1;
    a->balance -= total;
    return a->balance;
}

int compare_balance(const void *x, const void *y) {
    const struct account *a = x, *b = y;
    return (a->balance > b->balance) - (a->balance < b->balance);
}

unsigned long checksum(const char *s) {
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

int main(void) {
    struct account accounts[] = {{"ada", 100}, {"brian", 250}, {"chen", 75}, {"dora", 500}};
    int n = sizeof accounts / sizeof accounts[0];
    for (int round = 0; round < 10; round++)
        for (int i = 0; i < n; i++) {
            deposit(&accounts[i], 10 * (i + 1));
            withdraw(&accounts[i], 5 * (round + 1));
        }
    qsort(accounts, n, sizeof accounts[0], compare_balance);
    unsigned long sum = 0;
    for (int i = 0; i < n; i++) {
        sum += checksum(accounts[i].owner);
        printf("%-6s %6ld\n", accounts[i].owner, accounts[i].balance);
    }
    printf("checksum %lu\n", sum % 100000);
    return 0;
}
