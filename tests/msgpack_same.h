/*
 * msgpack_same.h: whether two unpacked msgpack objects are the same value,
 * for the wire-layer tests (tests/check_frame.c) and the fuzz target
 * (fuzz/fuzz_frame.c), which compare what proto_request_parse makes of some
 * bytes with what msgpack-c makes of them. Check-free, so that the fuzz
 * target, built with and without libFuzzer, can use it.
 *
 * Pure: any thread; it only reads the objects.
 */
#ifndef SC_TESTS_MSGPACK_SAME_H
#define SC_TESTS_MSGPACK_SAME_H

#include <msgpack.h>

/*
 * 1 if a and b are the same value: same types, same scalars (floats bit for
 * bit), same bytes of strings, bin and ext payloads, same elements in the
 * same order; else 0.
 */
int test_msgpack_same(const msgpack_object *a, const msgpack_object *b);

#endif /* SC_TESTS_MSGPACK_SAME_H */
