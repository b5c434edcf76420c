/* The few library routines a freestanding kernel needs. */
#include "kernel.h"

void *memset(void *d, int c, u32 n)
{
	u32 dst = (u32)d;
	if (!((dst | n) & 3)) {
		u32 v = (u8)c * 0x01010101u, cnt = n >> 2;
		__asm__ volatile("rep stosl" : "+D"(dst), "+c"(cnt) : "a"(v) : "memory");
		return d;
	}
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, u32 n)
{
	u32 dst = (u32)d, src = (u32)s;
	if (!((dst | src | n) & 3)) {
		u32 cnt = n >> 2;
		__asm__ volatile("rep movsl" : "+D"(dst), "+S"(src), "+c"(cnt) : : "memory");
		return d;
	}
	u8 *p = d;
	const u8 *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

/* xorshift32: the kernel's own deterministic choices, seeded from the ROM header */
u32 prng_next(u32 *state)
{
	u32 x = *state ? *state : 0x9E3779B9u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

/* 64-by-32-bit division without libgcc: two divl steps, as do_div does */
u64 div_u64_rem(u64 n, u32 d, u32 *rem)
{
	u32 hi = (u32)(n >> 32), lo = (u32)n, qhi = hi / d, r;
	hi %= d;
	u32 qlo;
	__asm__("divl %4" : "=a"(qlo), "=d"(r) : "0"(lo), "1"(hi), "rm"(d));
	if (rem)
		*rem = r;
	return ((u64)qhi << 32) | qlo;
}
