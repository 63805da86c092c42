/*
 * msgpack_same.c: structural equality of unpacked msgpack objects (see
 * msgpack_same.h for the contract).
 *
 * Pure: any thread; recursion depth is the objects' nesting depth, which
 * the wire layer bounds (proto_limits.max_depth) before anything is
 * compared.
 */
#include <stdint.h>
#include <string.h>

#include "msgpack_same.h"

int test_msgpack_same(const msgpack_object *a, const msgpack_object *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case MSGPACK_OBJECT_NIL:
		return 1;
	case MSGPACK_OBJECT_BOOLEAN:
		return a->via.boolean == b->via.boolean;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return a->via.u64 == b->via.u64;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return a->via.i64 == b->via.i64;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return memcmp(&a->via.f64, &b->via.f64, sizeof(double)) == 0;
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		/* msgpack-c leaves the pointer of an empty payload NULL or stale */
		return a->via.str.size == b->via.str.size &&
		       (a->via.str.size == 0 ||
		        memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0);
	case MSGPACK_OBJECT_EXT:
		return a->via.ext.type == b->via.ext.type && a->via.ext.size == b->via.ext.size &&
		       (a->via.ext.size == 0 ||
		        memcmp(a->via.ext.ptr, b->via.ext.ptr, a->via.ext.size) == 0);
	case MSGPACK_OBJECT_ARRAY:
		if (a->via.array.size != b->via.array.size)
			return 0;
		for (uint32_t i = 0; i < a->via.array.size; i++)
			if (!test_msgpack_same(&a->via.array.ptr[i], &b->via.array.ptr[i]))
				return 0;
		return 1;
	case MSGPACK_OBJECT_MAP:
		if (a->via.map.size != b->via.map.size)
			return 0;
		for (uint32_t i = 0; i < a->via.map.size; i++)
			if (!test_msgpack_same(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
			    !test_msgpack_same(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
				return 0;
		return 1;
	}
	return 0;
}
