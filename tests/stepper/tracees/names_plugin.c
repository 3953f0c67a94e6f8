/* A library for the dlopen and ambiguity tests: plug_fn is called by name through dlsym; the
 * constructor calls plug_init once, before dlopen returns (or before main, when linked), so a
 * probe on it shows whether probes are in before any of the library's code runs. */
static int ready;

static __attribute__((noinline)) int plug_init(void) {
    return ready = 1;
}

__attribute__((constructor)) static void plug_ctor(void) {
    plug_init();
}

int plug_fn(int x) {
    return x * 3 + ready - 1;
}
