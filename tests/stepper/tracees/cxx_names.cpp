// C++ names for probe specs: a namespace, overloads, an operator, a template; and data
// symbols in .data, .bss and .rodata, which a probe spec must refuse as variables.
namespace ns {
struct Acc {
    long total = 0;
    void add(int v) { total += v; }
    void add(double v) { total += (long)v; }
    Acc &operator+=(int v) { total += v; return *this; }
};
template <typename T> T biggest(T a, T b) { return a > b ? a : b; }
}
int counter = 3;
extern const int limit;
const int limit = 10;
int zeroed;

int main()
{
    ns::Acc a;
    for (int i = 0; i < 3; i++) {   // add(int) 3, add(double) 3, operator+= 3
        a.add(i);
        a.add(1.5);
        a += 2;
    }
    zeroed = ns::biggest<int>(1, 2) + (int)ns::biggest<double>(1.0, 2.0);
    return (int)(a.total % 7) + counter - limit + zeroed + 4;
}
