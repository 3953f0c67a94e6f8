/* Writes the global `watched` three times (1, 2, 3), reads it once, and exits 0 if it
 * holds 3: the tracee of the hardware debug register tests. */
volatile long watched;
volatile long other;

int main(void) {
    for (int i = 0; i < 3; i++) {
        watched = i + 1;
        other = i;
    }
    return watched == 3 ? 0 : 1;
}
