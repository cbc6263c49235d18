// uq_counter.hh - a C++ inline function with a static local: g++ gives the
// static STB_GNU_UNIQUE binding, one copy per process.
#pragma once

inline int &requests_seen()
{
    static int n;
    return n;
}
