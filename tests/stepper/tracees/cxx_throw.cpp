// Throws and catches on every even iteration: libstdc++'s libstdcxx:throw and
// libstdcxx:catch USDT probes fire once per exception. Prints how many it caught.
#include <cstdio>
#include <stdexcept>
int main(int argc, char **)
{
    int caught = 0;
    for (int i = 0; i < 4 + argc; i++) {
        try {
            if (i % 2 == 0)
                throw std::runtime_error("even");
        } catch (const std::exception &) {
            caught++;
        }
    }
    std::printf("caught %d\n", caught);
    return 0;
}
